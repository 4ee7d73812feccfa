# imapcalfs — top-level build.
# Dependencies come from pkg-config (fuse3, libical, openssl); libetpan is
# linked as plain -letpan because Debian's libetpan.pc forces a non-PIE link.

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
DESTDIR  ?=
BUILD    ?= build

CC       ?= cc
PKGS     := fuse3 libical openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude $(PKG_CFLAGS)
override LDLIBS += $(PKG_LIBS) -letpan -lpthread

ifeq ($(SAN),1)
override CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
override LDFLAGS += -fsanitize=address,undefined
endif

PROGS    := $(basename $(notdir $(wildcard src/imapcalfs.c src/mailbox2ics.c)))
MAIN_SRC := $(patsubst %,src/%.c,$(PROGS))
LIB_SRC  := $(filter-out $(MAIN_SRC),$(wildcard src/*.c))
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/%.o,$(LIB_SRC))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
HEADERS  := $(wildcard include/*.h)

PYTHON   := /usr/bin/python3

.PHONY: all check check-unit check-e2e check-asan check-valgrind demo demo-stop \
        install uninstall deb clean deps format format-check bench fuzz fuzz-smoke

all: $(patsubst %,$(BUILD)/%,$(PROGS))

$(BUILD)/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/imapcalfs: $(BUILD)/imapcalfs.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/mailbox2ics: $(BUILD)/mailbox2ics.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

# libFuzzer targets (tests/fuzz/fuzz_*.c) built with clang, ASan and UBSan
# into build-fuzz/, from their own instrumented build of the library.
# `make fuzz-smoke` runs each for FUZZ_SECONDS on the seed corpora and the
# regressions; see tests/fuzz/README.
FUZZ_BUILD   := build-fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
                -O1 -g -fno-omit-frame-pointer -Iinclude $(PKG_CFLAGS) \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN     := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_TARGETS))
# Only the modules the targets exercise (and what they call): a clang-only
# warning elsewhere in the tree cannot break the fuzz build.
FUZZ_LIBSRC  := $(wildcard src/cal_*.c src/mime*.c src/names.c src/config.c src/tzwin.c src/imap_guard.c)
FUZZ_LIBOBJ  := $(patsubst src/%.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_LIBSRC))

fuzz: $(FUZZ_BIN)

$(FUZZ_BUILD)/obj/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

# An archive, so each target links (and counts coverage of) only what it uses.
$(FUZZ_BUILD)/libimapcalfs.a: $(FUZZ_LIBOBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_BUILD)/libimapcalfs.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libimapcalfs.a $(LDLIBS)

fuzz-smoke: fuzz
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run $(FUZZ_TARGETS)

# The regression replay also runs the fuzz entry points (tests/fuzz/*.h).
$(BUILD)/tests/test_regressions: $(wildcard tests/fuzz/*.h)

deps:
	@scripts/deps

# Every test: unit tests of the pure parts, then the end-to-end suite
# (real Dovecot, real FUSE mounts).
check: deps all $(UNIT_BIN)
	@$(MAKE) --no-print-directory check-unit
	@$(MAKE) --no-print-directory check-e2e

check-unit: $(UNIT_BIN)
	@tests/unit/run $(UNIT_BIN)

check-e2e: all
	IMAPCALFS_BIN=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

# The whole suite again on an ASan+UBSan build.
check-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 CFLAGS="-O1 -g" all
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 CFLAGS="-O1 -g" check-unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  IMAPCALFS_BIN=$(abspath build-asan) IMAPCALFS_SANITIZED=1 $(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

# The unit tests and the end-to-end suite with the daemon under valgrind.
# VALGRIND_TESTS picks the e2e tests (all by default, as in CI).
VALGRIND_TESTS ?= tests/e2e
check-valgrind: all $(UNIT_BIN)
	@VALGRIND=1 tests/unit/run $(UNIT_BIN)
	IMAPCALFS_BIN=$(abspath $(BUILD)) IMAPCALFS_VALGRIND=1 $(PYTHON) -m pytest -q $(VALGRIND_TESTS) $(PYTEST_ARGS)

demo: deps all
	@scripts/demo start

demo-stop:
	@scripts/demo stop

bench: deps all
	$(PYTHON) bench/run.py $(BENCH_ARGS)

USERUNITDIR ?= $(PREFIX)/lib/systemd/user

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(USERUNITDIR)
	install -m 0755 $(BUILD)/imapcalfs $(BUILD)/mailbox2ics $(DESTDIR)$(BINDIR)/
	install -m 0644 man/imapcalfs.1 man/mailbox2ics.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/imapcalfs.conf.5 $(DESTDIR)$(MANDIR)/man5/
	sed 's|/usr/bin/imapcalfs|$(BINDIR)/imapcalfs|' packaging/systemd/imapcalfs@.service \
	  > $(DESTDIR)$(USERUNITDIR)/imapcalfs@.service
	chmod 0644 $(DESTDIR)$(USERUNITDIR)/imapcalfs@.service

# A Debian package of the working tree, in build-deb/.
deb:
	rm -rf build-deb && mkdir -p build-deb/imapcalfs-0.1
	tar -c --exclude=./build --exclude=./build-asan --exclude=./build-deb --exclude=./.git . \
	  | tar -x -C build-deb/imapcalfs-0.1
	cp -r packaging/debian build-deb/imapcalfs-0.1/debian
	cd build-deb/imapcalfs-0.1 && $(MAKE) clean && dpkg-buildpackage -us -uc -b
	@ls build-deb/*.deb

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/imapcalfs $(DESTDIR)$(BINDIR)/mailbox2ics
	rm -f $(DESTDIR)$(USERUNITDIR)/imapcalfs@.service
	rm -f $(DESTDIR)$(MANDIR)/man1/imapcalfs.1 $(DESTDIR)$(MANDIR)/man1/mailbox2ics.1
	rm -f $(DESTDIR)$(MANDIR)/man5/imapcalfs.conf.5

format:
	clang-format -i src/*.c include/*.h tests/unit/*.c tests/unit/*.h

format-check:
	clang-format --dry-run --Werror src/*.c include/*.h tests/unit/*.c tests/unit/*.h

clean:
	rm -rf build build-asan build-deb build-fuzz
