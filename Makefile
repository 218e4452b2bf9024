# hyperdistill build. `make` builds build/hdserver and build/hdworker;
# `make test` installs missing Debian packages, builds and runs every test;
# `make test SAN=1` does the same under AddressSanitizer + UBSan.

CC      ?= cc
CSTD    := -std=c11
WARN    := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wcast-qual -Wformat=2 -Wdouble-promotion -Wvla -Werror
OPT     ?= -O2 -g
PKGS    := openblas libcjson sqlite3 libmicrohttpd libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

SAN ?=
ifeq ($(SAN),1)
BUILD   ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
BUILD   ?= build
SANFLAGS :=
endif

CPPFLAGS := -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Icommon -Iserver -Iworker -Itests $(PKG_CFLAGS)
CFLAGS   := $(CSTD) $(WARN) $(OPT) $(SANFLAGS) -MMD -MP
LDLIBS   := $(PKG_LIBS) -lpthread -lm
LDFLAGS  := $(SANFLAGS)

COMMON_SRC := $(wildcard common/*.c)
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
WORKER_SRC := $(filter-out worker/main.c,$(wildcard worker/*.c))
TEST_SRC   := $(wildcard tests/unit/test_*.c tests/num/test_*.c tests/integ/test_*.c tests/fault/test_*.c tests/fuzz/test_*.c)
BENCH_SRC  := $(wildcard tests/bench/bench_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
SERVER_OBJ := $(call obj,$(SERVER_SRC))
WORKER_OBJ := $(call obj,$(WORKER_SRC))
LIBCOMMON  := $(BUILD)/libhdcommon.a
LIBSERVER  := $(BUILD)/libhdserver.a
LIBWORKER  := $(BUILD)/libhdworker.a
ALL_LIBS   := $(LIBSERVER) $(LIBWORKER) $(LIBCOMMON)
TEST_BIN   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_BIN  := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
PROGS      := $(if $(wildcard server/main.c),$(BUILD)/hdserver) $(if $(wildcard worker/main.c),$(BUILD)/hdworker)

.PHONY: all test test-run check deps clean checksrc noopt demo bench-core bench-sinusoid bench-sinusoid-quick bench-distributed
all: $(PROGS) $(TEST_BIN) $(BENCH_BIN)

V ?= 0
Q := $(if $(filter 1,$(V)),,@)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIBCOMMON): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^
$(LIBSERVER): $(SERVER_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^
$(LIBWORKER): $(WORKER_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/hdserver: $(BUILD)/obj/server/main.o $(ALL_LIBS)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(LDLIBS)
$(BUILD)/hdworker: $(BUILD)/obj/worker/main.o $(ALL_LIBS)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(LDLIBS)
$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(LDLIBS)

# Debian packages the project needs; installed with apt-get when missing.
DEB_PKGS := gcc make pkg-config libopenblas-dev libcjson-dev libsqlite3-dev \
            libmicrohttpd-dev libcurl4-openssl-dev curl python3-numpy prometheus
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# test: install what is missing, then build and run in a fresh make so that
# pkg-config sees the packages just installed.
test: deps
	@$(MAKE) --no-print-directory test-run SAN=$(SAN)

test-run: all
	@BUILD=$(BUILD) sh tests/run.sh

check:
	@$(MAKE) --no-print-directory test SAN=1

noopt:
	@$(MAKE) --no-print-directory all OPT="-O0 -g"

BANNED := strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol|atof|strncpy
checksrc:
	@if grep -nE '(^|[^_a-zA-Z0-9.>])($(BANNED))[[:space:]]*\(' common/*.[ch] server/*.[ch] worker/*.[ch] tests/*.h tests/*/*.[ch] 2>/dev/null; then \
	  echo "checksrc: banned function used"; exit 1; fi
	@clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h' | grep -v '^server/assets') && echo "checksrc: ok"

bench-core: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_core
	@$(BUILD)/bench/bench_core

demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/hdserver $(BUILD)/hdworker
	@BUILD=$(BUILD) sh deploy/demo.sh

bench-distributed: deps
	@$(MAKE) --no-print-directory $(BUILD)/hdserver $(BUILD)/hdworker
	@BUILD=$(BUILD) sh tests/bench/bench_distributed.sh

bench-sinusoid: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_sinusoid
	@$(BUILD)/bench/bench_sinusoid

bench-sinusoid-quick: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_sinusoid
	@$(BUILD)/bench/bench_sinusoid --quick

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# --- hdserver: schema migrations embedded into the server library ---------
SCHEMA_SQL := $(sort $(wildcard schema/[0-9]*.sql))
$(BUILD)/gen/schema_sql.c: $(SCHEMA_SQL) schema/embed.sh
	@mkdir -p $(dir $@)
	sh schema/embed.sh $@ $(SCHEMA_SQL)
$(BUILD)/gen/schema_sql.o: $(BUILD)/gen/schema_sql.c server/migrations.h
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(LIBSERVER): $(BUILD)/gen/schema_sql.o

# Server ingest benchmark (tests/bench/bench_ingest.c): prints figures.
.PHONY: bench-ingest
bench-ingest: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_ingest $(BUILD)/hdserver
	@BUILD=$(BUILD) $(BUILD)/bench/bench_ingest

# --- hdserver: the dashboard page embedded into the server library ---------
$(BUILD)/gen/dashboard_html.c: server/assets/dashboard.html server/assets/embed.sh
	@mkdir -p $(dir $@)
	sh server/assets/embed.sh $@ server/assets/dashboard.html
$(BUILD)/gen/dashboard_html.o: $(BUILD)/gen/dashboard_html.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(LIBSERVER): $(BUILD)/gen/dashboard_html.o

# The Slurm path for real (tests/slurm/test_slurm.sh): as root, installs
# slurm-wlm and munge when missing, starts a one-node Slurm cluster on
# localhost and runs deploy/slurm/hdworker-array.sbatch as two workers.
.PHONY: test-slurm
test-slurm: deps
	@$(MAKE) --no-print-directory $(BUILD)/hdserver $(BUILD)/hdworker
	@BUILD=$(BUILD) sh tests/slurm/test_slurm.sh
