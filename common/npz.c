/* .npz archives: the zip container numpy's np.savez writes around .npy
 * members (format: PKWARE APPNOTE.TXT 6.3, sections 4.3 and 4.5). Reading
 * trusts nothing: the archive is located through its end of central
 * directory record, every offset and size is checked against the file before
 * it is used, and each member is read, CRC-checked and decoded by npy.c one
 * at a time. Writing produces the same stored (uncompressed) layout numpy
 * does, minus the zip64 extras it does not need below 4 GiB. */
#include "npz.h"

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NPZ_MAX_FILE ((uint64_t)1 << 30) /* largest archive npz_load reads */
#define NPZ_MAX_MEMBERS 65535u           /* members per archive, both ways */
#define ZIP32_MAX 0xffffffffu            /* sizes/offsets above this need zip64 */

/* Record signatures and fixed sizes (APPNOTE 4.3.7, 4.3.12, 4.3.14-16). */
#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_LOCATOR 0x07064b50u
#define SIG_Z64_EOCD 0x06064b50u
#define LOCAL_LEN 30
#define CENTRAL_LEN 46
#define EOCD_LEN 22
#define EOCD_SEARCH (EOCD_LEN + 0xffff) /* the record plus the longest comment */
#define Z64_LOCATOR_LEN 20
#define Z64_EOCD_LEN 56
#define Z64_EXTRA_ID 0x0001

/* General purpose flags that mean the data cannot be read as is: traditional
 * encryption, strong encryption, encrypted central directory. */
#define FLAGS_ENCRYPTED (0x0001u | 0x0040u | 0x2000u)

#define VERSION_NEEDED 20              /* 2.0: stored members, directories */
#define VERSION_MADE_BY (0x0300u | 20) /* host Unix, spec 2.0, as Python writes */
#define DOS_DATE_1980 0x0021u          /* 1980-01-01; time 00:00:00 is 0 */
#define UNIX_MODE_FILE 0100644u        /* regular file, rw-r--r-- */

#define NAME_SHOW 96 /* bytes of a member name quoted in a message */

/* ---- CRC-32 (ISO 3309, reflected polynomial 0xEDB88320) ----------------- */

static const uint32_t crc_table[256] = {
    0x00000000U, 0x77073096U, 0xee0e612cU, 0x990951baU, 0x076dc419U, 0x706af48fU, 0xe963a535U,
    0x9e6495a3U, 0x0edb8832U, 0x79dcb8a4U, 0xe0d5e91eU, 0x97d2d988U, 0x09b64c2bU, 0x7eb17cbdU,
    0xe7b82d07U, 0x90bf1d91U, 0x1db71064U, 0x6ab020f2U, 0xf3b97148U, 0x84be41deU, 0x1adad47dU,
    0x6ddde4ebU, 0xf4d4b551U, 0x83d385c7U, 0x136c9856U, 0x646ba8c0U, 0xfd62f97aU, 0x8a65c9ecU,
    0x14015c4fU, 0x63066cd9U, 0xfa0f3d63U, 0x8d080df5U, 0x3b6e20c8U, 0x4c69105eU, 0xd56041e4U,
    0xa2677172U, 0x3c03e4d1U, 0x4b04d447U, 0xd20d85fdU, 0xa50ab56bU, 0x35b5a8faU, 0x42b2986cU,
    0xdbbbc9d6U, 0xacbcf940U, 0x32d86ce3U, 0x45df5c75U, 0xdcd60dcfU, 0xabd13d59U, 0x26d930acU,
    0x51de003aU, 0xc8d75180U, 0xbfd06116U, 0x21b4f4b5U, 0x56b3c423U, 0xcfba9599U, 0xb8bda50fU,
    0x2802b89eU, 0x5f058808U, 0xc60cd9b2U, 0xb10be924U, 0x2f6f7c87U, 0x58684c11U, 0xc1611dabU,
    0xb6662d3dU, 0x76dc4190U, 0x01db7106U, 0x98d220bcU, 0xefd5102aU, 0x71b18589U, 0x06b6b51fU,
    0x9fbfe4a5U, 0xe8b8d433U, 0x7807c9a2U, 0x0f00f934U, 0x9609a88eU, 0xe10e9818U, 0x7f6a0dbbU,
    0x086d3d2dU, 0x91646c97U, 0xe6635c01U, 0x6b6b51f4U, 0x1c6c6162U, 0x856530d8U, 0xf262004eU,
    0x6c0695edU, 0x1b01a57bU, 0x8208f4c1U, 0xf50fc457U, 0x65b0d9c6U, 0x12b7e950U, 0x8bbeb8eaU,
    0xfcb9887cU, 0x62dd1ddfU, 0x15da2d49U, 0x8cd37cf3U, 0xfbd44c65U, 0x4db26158U, 0x3ab551ceU,
    0xa3bc0074U, 0xd4bb30e2U, 0x4adfa541U, 0x3dd895d7U, 0xa4d1c46dU, 0xd3d6f4fbU, 0x4369e96aU,
    0x346ed9fcU, 0xad678846U, 0xda60b8d0U, 0x44042d73U, 0x33031de5U, 0xaa0a4c5fU, 0xdd0d7cc9U,
    0x5005713cU, 0x270241aaU, 0xbe0b1010U, 0xc90c2086U, 0x5768b525U, 0x206f85b3U, 0xb966d409U,
    0xce61e49fU, 0x5edef90eU, 0x29d9c998U, 0xb0d09822U, 0xc7d7a8b4U, 0x59b33d17U, 0x2eb40d81U,
    0xb7bd5c3bU, 0xc0ba6cadU, 0xedb88320U, 0x9abfb3b6U, 0x03b6e20cU, 0x74b1d29aU, 0xead54739U,
    0x9dd277afU, 0x04db2615U, 0x73dc1683U, 0xe3630b12U, 0x94643b84U, 0x0d6d6a3eU, 0x7a6a5aa8U,
    0xe40ecf0bU, 0x9309ff9dU, 0x0a00ae27U, 0x7d079eb1U, 0xf00f9344U, 0x8708a3d2U, 0x1e01f268U,
    0x6906c2feU, 0xf762575dU, 0x806567cbU, 0x196c3671U, 0x6e6b06e7U, 0xfed41b76U, 0x89d32be0U,
    0x10da7a5aU, 0x67dd4accU, 0xf9b9df6fU, 0x8ebeeff9U, 0x17b7be43U, 0x60b08ed5U, 0xd6d6a3e8U,
    0xa1d1937eU, 0x38d8c2c4U, 0x4fdff252U, 0xd1bb67f1U, 0xa6bc5767U, 0x3fb506ddU, 0x48b2364bU,
    0xd80d2bdaU, 0xaf0a1b4cU, 0x36034af6U, 0x41047a60U, 0xdf60efc3U, 0xa867df55U, 0x316e8eefU,
    0x4669be79U, 0xcb61b38cU, 0xbc66831aU, 0x256fd2a0U, 0x5268e236U, 0xcc0c7795U, 0xbb0b4703U,
    0x220216b9U, 0x5505262fU, 0xc5ba3bbeU, 0xb2bd0b28U, 0x2bb45a92U, 0x5cb36a04U, 0xc2d7ffa7U,
    0xb5d0cf31U, 0x2cd99e8bU, 0x5bdeae1dU, 0x9b64c2b0U, 0xec63f226U, 0x756aa39cU, 0x026d930aU,
    0x9c0906a9U, 0xeb0e363fU, 0x72076785U, 0x05005713U, 0x95bf4a82U, 0xe2b87a14U, 0x7bb12baeU,
    0x0cb61b38U, 0x92d28e9bU, 0xe5d5be0dU, 0x7cdcefb7U, 0x0bdbdf21U, 0x86d3d2d4U, 0xf1d4e242U,
    0x68ddb3f8U, 0x1fda836eU, 0x81be16cdU, 0xf6b9265bU, 0x6fb077e1U, 0x18b74777U, 0x88085ae6U,
    0xff0f6a70U, 0x66063bcaU, 0x11010b5cU, 0x8f659effU, 0xf862ae69U, 0x616bffd3U, 0x166ccf45U,
    0xa00ae278U, 0xd70dd2eeU, 0x4e048354U, 0x3903b3c2U, 0xa7672661U, 0xd06016f7U, 0x4969474dU,
    0x3e6e77dbU, 0xaed16a4aU, 0xd9d65adcU, 0x40df0b66U, 0x37d83bf0U, 0xa9bcae53U, 0xdebb9ec5U,
    0x47b2cf7fU, 0x30b5ffe9U, 0xbdbdf21cU, 0xcabac28aU, 0x53b39330U, 0x24b4a3a6U, 0xbad03605U,
    0xcdd70693U, 0x54de5729U, 0x23d967bfU, 0xb3667a2eU, 0xc4614ab8U, 0x5d681b02U, 0x2a6f2b94U,
    0xb40bbe37U, 0xc30c8ea1U, 0x5a05df1bU, 0x2d02ef8dU,
};

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- little-endian fields ----------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static void wr16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

/* ---- shared file helpers ------------------------------------------------ */

static hd_rc io_fail(hd_err *err, const char *what, const char *path, int e) {
    char et[128];
    return hd_err_set(err, HD_EIO, "npz: %s %s: %s", what, path,
                      fileio_errno_text(e, et, sizeof et));
}

/* Quote a name from the archive safely in a one-line message: printable
 * ASCII is kept, anything else becomes '?', long names are cut with "...". */
static const char *show_name(char out[NAME_SHOW], const uint8_t *name, size_t len) {
    size_t n = len < NAME_SHOW - 4 ? len : NAME_SHOW - 4;
    for (size_t i = 0; i < n; i++) out[i] = name[i] >= 0x20 && name[i] < 0x7f ? (char)name[i] : '?';
    if (n < len) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct {
    char *name;   /* member name without ".npy", NUL-terminated, owned */
    npy_header h; /* header of the member's .npy image */
    double *data; /* h.count doubles, owned, never NULL */
} npz_entry;

struct npz_file {
    size_t count;       /* members, in archive order */
    npz_entry *entries; /* count entries (NULL when count is 0) */
};

/* One central directory entry after validation; names point into the
 * central directory buffer. */
typedef struct {
    const uint8_t *name; /* full member name ("x.npy"), not NUL-terminated */
    size_t name_len;     /* bytes at name, > 4 */
    uint32_t crc;        /* CRC-32 of the stored bytes */
    size_t size;         /* stored size = uncompressed size, <= NPZ_MAX_FILE */
    size_t offset;       /* local header offset, < central directory offset */
} cd_entry;

/* Reader state for one npz_load call. */
typedef struct {
    int fd;           /* archive, open for reading */
    const char *path; /* for messages */
    size_t size;      /* file size, <= NPZ_MAX_FILE */
    hd_err *err;      /* where errors go */
} reader;

/* pread exactly n bytes at off; a short read means the file changed size
 * under us, since every range was checked against the size first. */
static hd_rc read_exact(const reader *r, uint64_t off, uint8_t *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t got = pread(r->fd, p + done, n - done, (off_t)(off + done));
        if (got < 0) {
            if (errno == EINTR) continue;
            return io_fail(r->err, "read", r->path, errno);
        }
        if (got == 0) return hd_err_set(r->err, HD_EIO, "npz: %s shrank while being read", r->path);
        done += (size_t)got;
    }
    return HD_OK;
}

/* Location of the central directory and where the data before it ends. */
typedef struct {
    uint64_t entries; /* number of central directory entries */
    uint64_t offset;  /* start of the central directory */
    uint64_t size;    /* bytes in the central directory */
} cd_info;

/* The zip64 end of central directory record, found through the locator that
 * sits right before the classic record at eocd_off. Its numbers replace the
 * classic ones (which may hold 0xFFFF/0xFFFFFFFF placeholders). */
static hd_rc read_zip64_eocd(const reader *r, uint64_t eocd_off, const uint8_t loc[Z64_LOCATOR_LEN],
                             cd_info *cd, uint64_t *limit) {
    uint32_t rec_disk = rd32(loc + 4), disks = rd32(loc + 16);
    uint64_t rec_off = rd64(loc + 8);
    uint64_t loc_off = eocd_off - Z64_LOCATOR_LEN;
    if (rec_disk != 0 || disks > 1)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: multi-disk (spanned) zip archives are not supported", r->path);
    if (loc_off < Z64_EOCD_LEN || rec_off > loc_off - Z64_EOCD_LEN)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: zip64 end of central directory offset %llu out of range",
                          r->path, (unsigned long long)rec_off);
    uint8_t rec[Z64_EOCD_LEN];
    hd_rc rc = read_exact(r, rec_off, rec, sizeof rec);
    if (rc != HD_OK) return rc;
    uint64_t rec_size = rd64(rec + 4); /* size of the rest of the record */
    if (rd32(rec) != SIG_Z64_EOCD || rec_size < Z64_EOCD_LEN - 12 ||
        rec_size > loc_off - rec_off - 12)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: bad zip64 end of central directory record at offset %llu",
                          r->path, (unsigned long long)rec_off);
    uint32_t disk = rd32(rec + 16), cd_disk = rd32(rec + 20);
    uint64_t on_disk = rd64(rec + 24);
    cd->entries = rd64(rec + 32);
    cd->size = rd64(rec + 40);
    cd->offset = rd64(rec + 48);
    if (disk != 0 || cd_disk != 0 || on_disk != cd->entries)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: multi-disk (spanned) zip archives are not supported", r->path);
    *limit = rec_off;
    return HD_OK;
}

/* Find the end of central directory record: the last signature within
 * EOCD_SEARCH bytes of the end whose comment ends exactly at the end of the
 * file (so a signature inside a comment is not mistaken for the record).
 * Fills *cd, checked to lie inside the file before the record. */
static hd_rc find_central_dir(const reader *r, cd_info *cd) {
    if (r->size < EOCD_LEN)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: %zu bytes is too short for a zip archive (truncated?)", r->path,
                          r->size);
    size_t tail_len = r->size < EOCD_SEARCH ? r->size : EOCD_SEARCH;
    uint64_t tail_off = r->size - tail_len;
    uint8_t *tail = malloc(tail_len);
    if (!tail) return hd_err_set(r->err, HD_ENOMEM, "npz: out of memory reading %s", r->path);
    hd_rc rc = read_exact(r, tail_off, tail, tail_len);
    if (rc != HD_OK) {
        free(tail);
        return rc;
    }
    size_t at = tail_len - EOCD_LEN;
    while (!(rd32(tail + at) == SIG_EOCD && at + EOCD_LEN + rd16(tail + at + 20) == tail_len) &&
           at > 0)
        at--;
    int found = rd32(tail + at) == SIG_EOCD && at + EOCD_LEN + rd16(tail + at + 20) == tail_len;
    uint8_t eocd[EOCD_LEN];
    memcpy(eocd, tail + at, EOCD_LEN);
    free(tail);
    if (!found)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: no end of central directory record (not a zip archive, or "
                          "truncated)",
                          r->path);
    uint64_t eocd_off = tail_off + at, limit = eocd_off;
    unsigned disk = rd16(eocd + 4), cd_disk = rd16(eocd + 6), on_disk = rd16(eocd + 8);
    cd->entries = rd16(eocd + 10);
    cd->size = rd32(eocd + 12);
    cd->offset = rd32(eocd + 16);
    /* A zip64 locator, when present, sits right before the classic record. */
    uint8_t loc[Z64_LOCATOR_LEN];
    int zip64 = 0;
    if (eocd_off >= Z64_LOCATOR_LEN) {
        if ((rc = read_exact(r, eocd_off - Z64_LOCATOR_LEN, loc, sizeof loc)) != HD_OK) return rc;
        zip64 = rd32(loc) == SIG_Z64_LOCATOR;
    }
    if (zip64) {
        if ((rc = read_zip64_eocd(r, eocd_off, loc, cd, &limit)) != HD_OK) return rc;
    } else if (disk != 0 || cd_disk != 0 || on_disk != cd->entries) {
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: multi-disk (spanned) zip archives are not supported", r->path);
    }
    if (cd->offset > limit || cd->size > limit - cd->offset)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: central directory (offset %llu, %llu bytes) extends beyond the "
                          "archive data (%llu bytes)",
                          r->path, (unsigned long long)cd->offset, (unsigned long long)cd->size,
                          (unsigned long long)limit);
    if (cd->entries > NPZ_MAX_MEMBERS)
        return hd_err_set(r->err, HD_ETOOBIG, "npz: %s: %llu members exceed the limit of %u",
                          r->path, (unsigned long long)cd->entries, NPZ_MAX_MEMBERS);
    if (cd->entries > cd->size / CENTRAL_LEN)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: central directory of %llu bytes cannot hold %llu entries",
                          r->path, (unsigned long long)cd->size, (unsigned long long)cd->entries);
    return HD_OK;
}

/* Replace the 0xFFFFFFFF placeholders of one central directory entry with
 * the values of its zip64 extra field (APPNOTE 4.5.3: present fields appear
 * in the order usize, csize, offset, disk, and only those that overflowed). */
static hd_rc apply_zip64_extra(const reader *r, const char *show, const uint8_t *ex, size_t ex_len,
                               uint64_t *usize, uint64_t *csize, uint64_t *offset, uint32_t *disk) {
    int need =
        *usize == ZIP32_MAX || *csize == ZIP32_MAX || *offset == ZIP32_MAX || *disk == 0xffff;
    size_t i = 0;
    while (i < ex_len) {
        if (ex_len - i < 4)
            return hd_err_set(r->err, HD_EFORMAT, "npz: member '%s': malformed extra field", show);
        unsigned id = rd16(ex + i), len = rd16(ex + i + 2);
        i += 4;
        if (len > ex_len - i)
            return hd_err_set(r->err, HD_EFORMAT, "npz: member '%s': malformed extra field", show);
        if (id == Z64_EXTRA_ID && need) {
            const uint8_t *f = ex + i;
            size_t left = len;
            uint64_t *const fields[3] = {usize, csize, offset};
            for (int k = 0; k < 3; k++) {
                if (*fields[k] != ZIP32_MAX) continue;
                if (left < 8)
                    return hd_err_set(r->err, HD_EFORMAT,
                                      "npz: member '%s': zip64 extra field too short", show);
                *fields[k] = rd64(f);
                f += 8;
                left -= 8;
            }
            if (*disk == 0xffff) {
                if (left < 4)
                    return hd_err_set(r->err, HD_EFORMAT,
                                      "npz: member '%s': zip64 extra field too short", show);
                *disk = rd32(f);
            }
            need = 0;
        }
        i += len;
    }
    return HD_OK;
}

/* Validate central directory entry number idx at *pos of the directory and
 * advance *pos past it. Everything that can be checked without reading the
 * member is checked here: signature, encryption, compression, name, sizes,
 * and that the member lies before the central directory. */
static hd_rc parse_cd_entry(const reader *r, const uint8_t *dir, const cd_info *cd, size_t idx,
                            size_t max_member, size_t *pos, cd_entry *e) {
    size_t p = *pos, left = (size_t)cd->size - p;
    const uint8_t *h = dir + p;
    if (left < CENTRAL_LEN || rd32(h) != SIG_CENTRAL)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: bad central directory entry %zu at offset %llu", r->path, idx,
                          (unsigned long long)(cd->offset + p));
    unsigned flags = rd16(h + 8), method = rd16(h + 10);
    size_t nlen = rd16(h + 28), xlen = rd16(h + 30), clen = rd16(h + 32);
    if (CENTRAL_LEN + nlen + xlen + clen > left)
        return hd_err_set(r->err, HD_EFORMAT, "npz: %s: central directory entry %zu is truncated",
                          r->path, idx);
    const uint8_t *name = h + CENTRAL_LEN;
    char show[NAME_SHOW];
    show_name(show, name, nlen);
    if (flags & FLAGS_ENCRYPTED)
        return hd_err_set(r->err, HD_EFORMAT, "npz: member '%s' is encrypted", show);
    if (method != 0) {
        char how[32];
        snprintf(how, sizeof how, "%s",
                 method == 8    ? "deflate"
                 : method == 12 ? "bzip2"
                 : method == 14 ? "lzma"
                                : "");
        if (!how[0]) snprintf(how, sizeof how, "method %u", method);
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: member '%s' is compressed (%s); save with np.savez, not "
                          "np.savez_compressed",
                          show, how);
    }
    if (memchr(name, '\0', nlen))
        return hd_err_set(r->err, HD_EFORMAT, "npz: member name '%s' contains a NUL byte", show);
    if (nlen < 4 || memcmp(name + nlen - 4, ".npy", 4) != 0)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: member '%s' is not a .npy array (an np.savez archive holds only "
                          ".npy members)",
                          show);
    uint64_t csize = rd32(h + 20), usize = rd32(h + 24), offset = rd32(h + 42);
    uint32_t disk = rd16(h + 34);
    hd_rc rc = apply_zip64_extra(r, show, name + nlen, xlen, &usize, &csize, &offset, &disk);
    if (rc != HD_OK) return rc;
    if (disk != 0)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: %s: multi-disk (spanned) zip archives are not supported", r->path);
    if (csize != usize)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: member '%s' is stored but its sizes differ (%llu compressed, "
                          "%llu uncompressed)",
                          show, (unsigned long long)csize, (unsigned long long)usize);
    /* Both below the central directory offset (<= 1 GiB), so sums cannot
     * overflow. */
    if (offset > cd->offset || csize > cd->offset || offset + LOCAL_LEN + nlen + csize > cd->offset)
        return hd_err_set(r->err, HD_EFORMAT,
                          "npz: member '%s' (offset %llu, %llu bytes) lies outside the archive "
                          "data (%llu bytes)",
                          show, (unsigned long long)offset, (unsigned long long)csize,
                          (unsigned long long)cd->offset);
    if (csize > max_member)
        return hd_err_set(r->err, HD_ETOOBIG,
                          "npz: member '%s' has %llu bytes, more than any .npy image within the "
                          "element limit",
                          show, (unsigned long long)csize);
    e->name = name;
    e->name_len = nlen;
    e->crc = rd32(h + 16);
    e->size = (size_t)csize;
    e->offset = (size_t)offset;
    *pos = p + CENTRAL_LEN + nlen + xlen + clen;
    return HD_OK;
}

static int cmp_entry_name(const void *a, const void *b) {
    const cd_entry *x = *(const cd_entry *const *)a, *y = *(const cd_entry *const *)b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c != 0) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* Refuse two members with the same name (numpy would silently keep one). */
static hd_rc check_duplicates(const reader *r, const cd_entry *ents, size_t n) {
    if (n < 2) return HD_OK;
    const cd_entry **by_name = malloc(n * sizeof *by_name);
    if (!by_name) return hd_err_set(r->err, HD_ENOMEM, "npz: out of memory reading %s", r->path);
    for (size_t i = 0; i < n; i++) by_name[i] = &ents[i];
    qsort(by_name, n, sizeof *by_name, cmp_entry_name);
    hd_rc rc = HD_OK;
    for (size_t i = 1; i < n && rc == HD_OK; i++) {
        if (cmp_entry_name(&by_name[i - 1], &by_name[i]) == 0) {
            char show[NAME_SHOW];
            rc = hd_err_set(r->err, HD_EFORMAT, "npz: %s: duplicate member '%s'", r->path,
                            show_name(show, by_name[i]->name, by_name[i]->name_len));
        }
    }
    free(by_name);
    return rc;
}

/* Read member e through its local header, check its CRC-32 and decode it. */
static hd_rc load_member(const reader *r, const cd_entry *e, uint64_t data_end, size_t max_elems,
                         npz_entry *out) {
    char show[NAME_SHOW];
    show_name(show, e->name, e->name_len);
    /* The local header and its copy of the name: at most 30 + 65535 bytes,
     * inside the archive data (checked in parse_cd_entry). */
    uint8_t *lh = malloc(LOCAL_LEN + e->name_len);
    if (!lh) return hd_err_set(r->err, HD_ENOMEM, "npz: out of memory reading %s", r->path);
    hd_rc rc = read_exact(r, e->offset, lh, LOCAL_LEN + e->name_len);
    if (rc != HD_OK) goto free_lh;
    if (rd32(lh) != SIG_LOCAL) {
        rc = hd_err_set(r->err, HD_EFORMAT,
                        "npz: member '%s': bad local header signature at offset %zu", show,
                        e->offset);
        goto free_lh;
    }
    if (rd16(lh + 8) != 0 || (rd16(lh + 6) & FLAGS_ENCRYPTED)) {
        rc = hd_err_set(r->err, HD_EFORMAT,
                        "npz: member '%s': local header says compressed or encrypted, unlike the "
                        "central directory",
                        show);
        goto free_lh;
    }
    if (rd16(lh + 26) != e->name_len || memcmp(lh + LOCAL_LEN, e->name, e->name_len) != 0) {
        rc = hd_err_set(r->err, HD_EFORMAT,
                        "npz: member '%s': local header name differs from the central directory",
                        show);
        goto free_lh;
    }
    uint64_t data_off = (uint64_t)e->offset + LOCAL_LEN + e->name_len + rd16(lh + 28);
    if (data_off > data_end || e->size > data_end - data_off) {
        rc = hd_err_set(r->err, HD_EFORMAT,
                        "npz: member '%s': data (offset %llu, %zu bytes) runs past the archive "
                        "data",
                        show, (unsigned long long)data_off, e->size);
        goto free_lh;
    }
    uint8_t *img = malloc(e->size ? e->size : 1);
    if (!img) {
        rc = hd_err_set(r->err, HD_ENOMEM, "npz: out of memory for %zu bytes of member '%s'",
                        e->size, show);
        goto free_lh;
    }
    if ((rc = read_exact(r, data_off, img, e->size)) != HD_OK) goto free_img;
    uint32_t crc = crc32_update(0, img, e->size);
    if (crc != e->crc) {
        rc = hd_err_set(r->err, HD_EFORMAT,
                        "npz: member '%s' fails its CRC-32 check (stored 0x%08x, computed 0x%08x)",
                        show, (unsigned)e->crc, (unsigned)crc);
        goto free_img;
    }
    size_t base_len = e->name_len - 4;
    char *name = malloc(base_len + 1);
    if (!name) {
        rc = hd_err_set(r->err, HD_ENOMEM, "npz: out of memory reading %s", r->path);
        goto free_img;
    }
    memcpy(name, e->name, base_len);
    name[base_len] = '\0';
    hd_err sub;
    hd_err_clear(&sub);
    npy_header h;
    double *data = NULL;
    rc = npy_decode(img, e->size, max_elems, 1, &h, &data, &sub);
    if (rc != HD_OK) {
        hd_err_set(r->err, rc, "npz: member '%s': %s", show, sub.msg);
        free(name);
        goto free_img;
    }
    out->name = name;
    out->h = h;
    out->data = data;
free_img:
    free(img);
free_lh:
    free(lh);
    return rc;
}

/* Largest .npy image a member with at most max_elems elements can be. */
static size_t max_member_size(size_t max_elems) {
    size_t bytes;
    if (hd_mul_size(max_elems, sizeof(double), &bytes) != 0 ||
        bytes > SIZE_MAX - NPY_MAX_HEADER_LEN)
        return SIZE_MAX;
    return bytes + NPY_MAX_HEADER_LEN;
}

static hd_rc load_archive(const reader *r, size_t max_elems, npz_file **out) {
    cd_info cd = {0, 0, 0};
    hd_rc rc = find_central_dir(r, &cd);
    if (rc != HD_OK) return rc;
    size_t n = (size_t)cd.entries, pos = 0;
    uint8_t *dir = malloc(cd.size ? (size_t)cd.size : 1);
    cd_entry *ents = calloc(n ? n : 1, sizeof *ents);
    npz_file *z = calloc(1, sizeof *z);
    if (z && n) z->entries = calloc(n, sizeof *z->entries);
    if (!dir || !ents || !z || (n && !z->entries)) {
        rc = hd_err_set(r->err, HD_ENOMEM, "npz: out of memory reading %s", r->path);
        goto out;
    }
    if ((rc = read_exact(r, cd.offset, dir, (size_t)cd.size)) != HD_OK) goto out;
    /* Pass 1: the whole directory, before any member is read. The local
     * headers and data of distinct members cannot overlap, so their sizes
     * add up to at most the central directory offset; this bounds the total
     * read even for a directory that lists one member many times. */
    size_t max_member = max_member_size(max_elems);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = parse_cd_entry(r, dir, &cd, i, max_member, &pos, &ents[i])) != HD_OK) goto out;
        total += LOCAL_LEN + ents[i].name_len + ents[i].size;
        if (total > cd.offset) {
            rc = hd_err_set(r->err, HD_EFORMAT,
                            "npz: %s: members overlap (they need more than the %llu bytes before "
                            "the central directory)",
                            r->path, (unsigned long long)cd.offset);
            goto out;
        }
    }
    if (pos != cd.size) {
        rc = hd_err_set(r->err, HD_EFORMAT,
                        "npz: %s: central directory has %llu bytes after its %zu entries", r->path,
                        (unsigned long long)(cd.size - pos), n);
        goto out;
    }
    if ((rc = check_duplicates(r, ents, n)) != HD_OK) goto out;
    /* Pass 2: read, check and decode the members one by one. */
    for (size_t i = 0; i < n; i++) {
        if ((rc = load_member(r, &ents[i], cd.offset, max_elems, &z->entries[i])) != HD_OK)
            goto out;
        z->count = i + 1;
    }
    *out = z;
    z = NULL;
out:
    npz_free(z);
    free(ents);
    free(dir);
    return rc;
}

hd_rc npz_load(const char *path, size_t max_elems, npz_file **out, hd_err *err) {
    if (!path || !out) return hd_err_set(err, HD_EINVAL, "npz load: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_fail(err, "open", path, errno);
    hd_rc rc;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = io_fail(err, "stat", path, errno);
        goto close_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = hd_err_set(err, HD_EIO, "npz: %s is not a regular file", path);
        goto close_fd;
    }
    if ((uint64_t)st.st_size > NPZ_MAX_FILE) {
        rc = hd_err_set(err, HD_ETOOBIG, "npz: %s has %lld bytes, more than the limit of %llu",
                        path, (long long)st.st_size, (unsigned long long)NPZ_MAX_FILE);
        goto close_fd;
    }
    reader r = {fd, path, (size_t)st.st_size, err};
    rc = load_archive(&r, max_elems, out);
close_fd:
    close(fd);
    return rc;
}

void npz_free(npz_file *z) {
    if (!z) return;
    for (size_t i = 0; i < z->count; i++) {
        free(z->entries[i].name);
        free(z->entries[i].data);
    }
    free(z->entries);
    free(z);
}

size_t npz_count(const npz_file *z) { return z ? z->count : 0; }

const char *npz_name(const npz_file *z, size_t i) {
    return z && i < z->count ? z->entries[i].name : NULL;
}

const double *npz_get(const npz_file *z, const char *name, npy_header *h) {
    if (!z || !name) return NULL;
    for (size_t i = 0; i < z->count; i++) {
        if (strcmp(z->entries[i].name, name) == 0) {
            if (h) *h = z->entries[i].h;
            return z->entries[i].data;
        }
    }
    return NULL;
}

/* ---- writing ------------------------------------------------------------ */

/* What the central directory needs to know about a written member. */
typedef struct {
    uint32_t crc;    /* CRC-32 of the .npy image */
    uint32_t size;   /* bytes in the .npy image */
    uint32_t offset; /* offset of the local header */
} written;

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Check the arguments and compute the archive size before anything is
 * written, so that no partial temporary file is ever created for bad input.
 * Sizes follow npy_encode exactly (npy_header_size + count * itemsize). */
static hd_rc plan_archive(size_t count, const npz_member *m, hd_err *err) {
    if (count > NPZ_MAX_MEMBERS)
        return hd_err_set(err, HD_ETOOBIG, "npz save: %zu members exceed the limit of %u", count,
                          NPZ_MAX_MEMBERS);
    HD_ASSERT(count == 0 || m != NULL);
    uint64_t total = EOCD_LEN;
    for (size_t i = 0; i < count; i++) {
        if (!m[i].name) return hd_err_set(err, HD_EINVAL, "npz save: member %zu has no name", i);
        size_t nlen = strlen(m[i].name);
        if (nlen > 0xffff - 4)
            return hd_err_set(err, HD_EINVAL, "npz save: member %zu: name of %zu bytes too long", i,
                              nlen);
        if (m[i].ndim > 0 && !m[i].shape)
            return hd_err_set(err, HD_EINVAL, "npz save: member '%s' has no shape", m[i].name);
        if (m[i].dtype != NPY_F32 && m[i].dtype != NPY_F64)
            return hd_err_set(err, HD_EINVAL, "npz save: member '%s': invalid dtype %d", m[i].name,
                              (int)m[i].dtype);
        if (m[i].ndim > NPY_MAX_NDIM)
            return hd_err_set(err, HD_EINVAL,
                              "npz save: member '%s': %zu dimensions, at most %d supported",
                              m[i].name, m[i].ndim, NPY_MAX_NDIM);
        size_t hsize = npy_header_size(m[i].dtype, m[i].ndim, m[i].shape);
        HD_ASSERT(hsize > 0);
        uint64_t bytes = (uint64_t)m[i].dtype;
        size_t elems = 1;
        for (size_t k = 0; k < m[i].ndim; k++)
            if (hd_mul_size(elems, m[i].shape[k], &elems) != 0 || elems > ZIP32_MAX)
                return hd_err_set(err, HD_ETOOBIG,
                                  "npz save: member '%s' is too large for a zip archive without "
                                  "zip64 (4 GiB)",
                                  m[i].name);
        if (elems > 0 && !m[i].data)
            return hd_err_set(err, HD_EINVAL, "npz save: member '%s' has no data", m[i].name);
        bytes = bytes * elems + hsize;
        total += LOCAL_LEN + CENTRAL_LEN + 2 * (uint64_t)(nlen + 4) + bytes;
        if (total >= ZIP32_MAX)
            return hd_err_set(err, HD_ETOOBIG,
                              "npz save: archive would exceed 4 GiB (zip64 is not written)");
    }
    if (count < 2) return HD_OK;
    const char **names = malloc(count * sizeof *names);
    if (!names) return hd_err_set(err, HD_ENOMEM, "npz save: out of memory");
    for (size_t i = 0; i < count; i++) names[i] = m[i].name;
    qsort(names, count, sizeof *names, cmp_cstr);
    hd_rc rc = HD_OK;
    for (size_t i = 1; i < count && rc == HD_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = hd_err_set(err, HD_EINVAL, "npz save: duplicate member name '%s'", names[i]);
    free(names);
    return rc;
}

/* Local header (APPNOTE 4.3.7) for a stored member with known CRC and size,
 * so no data descriptor is needed. */
static void local_header(uint8_t h[LOCAL_LEN], uint32_t crc, uint32_t size, size_t name_len) {
    memset(h, 0, LOCAL_LEN);
    wr32(h, SIG_LOCAL);
    wr16(h + 4, VERSION_NEEDED);
    wr16(h + 12, DOS_DATE_1980);
    wr32(h + 14, crc);
    wr32(h + 18, size);
    wr32(h + 22, size);
    wr16(h + 26, (unsigned)name_len);
}

static void central_header(uint8_t h[CENTRAL_LEN], const written *w, size_t name_len) {
    memset(h, 0, CENTRAL_LEN);
    wr32(h, SIG_CENTRAL);
    wr16(h + 4, VERSION_MADE_BY);
    wr16(h + 6, VERSION_NEEDED);
    wr16(h + 14, DOS_DATE_1980);
    wr32(h + 16, w->crc);
    wr32(h + 20, w->size);
    wr32(h + 24, w->size);
    wr16(h + 28, (unsigned)name_len);
    wr32(h + 38, (uint32_t)UNIX_MODE_FILE << 16);
    wr32(h + 42, w->offset);
}

/* Write one member ("<name>.npy" local header, then the .npy image) at *off
 * and record its CRC, size and offset. */
static hd_rc write_member(int fd, const char *tmp, const npz_member *m, uint64_t *off, written *w,
                          hd_err *err) {
    uint8_t *img = NULL;
    size_t img_len = 0;
    hd_rc rc = npy_encode(m->dtype, m->ndim, m->shape, m->data, &img, &img_len, err);
    if (rc != HD_OK) return rc;
    size_t nlen = strlen(m->name);
    HD_ASSERT(img_len < ZIP32_MAX && *off < ZIP32_MAX); /* plan_archive bounded the total */
    w->crc = crc32_update(0, img, img_len);
    w->size = (uint32_t)img_len;
    w->offset = (uint32_t)*off;
    uint8_t lh[LOCAL_LEN];
    local_header(lh, w->crc, w->size, nlen + 4);
    if (fileio_write_all(fd, lh, sizeof lh) != 0 ||
        fileio_write_all(fd, (const uint8_t *)m->name, nlen) != 0 ||
        fileio_write_all(fd, (const uint8_t *)".npy", 4) != 0 ||
        fileio_write_all(fd, img, img_len) != 0)
        rc = io_fail(err, "write", tmp, errno);
    *off += LOCAL_LEN + nlen + 4 + img_len;
    free(img);
    return rc;
}

static hd_rc write_archive(int fd, const char *tmp, size_t count, const npz_member *m,
                           hd_err *err) {
    written *w = malloc((count ? count : 1) * sizeof *w);
    if (!w) return hd_err_set(err, HD_ENOMEM, "npz save: out of memory");
    uint64_t off = 0;
    hd_rc rc = HD_OK;
    for (size_t i = 0; i < count && rc == HD_OK; i++)
        rc = write_member(fd, tmp, &m[i], &off, &w[i], err);
    uint64_t cd_off = off;
    for (size_t i = 0; i < count && rc == HD_OK; i++) {
        size_t nlen = strlen(m[i].name);
        uint8_t ch[CENTRAL_LEN];
        central_header(ch, &w[i], nlen + 4);
        if (fileio_write_all(fd, ch, sizeof ch) != 0 ||
            fileio_write_all(fd, (const uint8_t *)m[i].name, nlen) != 0 ||
            fileio_write_all(fd, (const uint8_t *)".npy", 4) != 0)
            rc = io_fail(err, "write", tmp, errno);
        off += CENTRAL_LEN + nlen + 4;
    }
    if (rc == HD_OK) {
        HD_ASSERT(off + EOCD_LEN < ZIP32_MAX);
        uint8_t eocd[EOCD_LEN];
        memset(eocd, 0, sizeof eocd);
        wr32(eocd, SIG_EOCD);
        wr16(eocd + 8, (unsigned)count);
        wr16(eocd + 10, (unsigned)count);
        wr32(eocd + 12, (uint32_t)(off - cd_off));
        wr32(eocd + 16, (uint32_t)cd_off);
        if (fileio_write_all(fd, eocd, sizeof eocd) != 0) rc = io_fail(err, "write", tmp, errno);
    }
    free(w);
    return rc;
}

hd_rc npz_save(const char *path, size_t count, const npz_member *members, hd_err *err) {
    if (!path || (count > 0 && !members))
        return hd_err_set(err, HD_EINVAL, "npz save: NULL argument");
    hd_rc rc = plan_archive(count, members, err);
    if (rc != HD_OK) return rc;
    fileio_atomic a;
    if ((rc = fileio_atomic_open(&a, "npz", path, err)) != HD_OK) return rc;
    if ((rc = write_archive(a.fd, a.tmp, count, members, err)) != HD_OK) {
        fileio_atomic_abort(&a);
        return rc;
    }
    return fileio_atomic_commit(&a, err);
}
