# kvm-spp: EPT-based Sub-Page write Protection for Linux 6.12 KVM.
#
#   make run          the demo: a guest writes across a sub-page-protected page
#                     on Bochs's emulated SPP CPU (tigerlake)
#   make check        the full test matrix, one table, `N passed, N failed`
#   make kernel       bzImage (FLAVOUR=base|debug)
#   make export       the whole change as a git-am-able series + cover letter
#   make export-check every prefix of that series builds, warning- and
#                     checkpatch-clean (one row per commit)
#
# Variables: FLAVOUR=base|debug, CELLS="bochs-tigerlake-tdp1 ...",
# BENCH_INJECT=fail|warn|hang (prove the bench catches each; off by
# default), BENCH_BREAK=bench/break/PATCH (a deliberate kernel bug: the
# bench must catch it), PATCHES=none (the same bench on pristine 6.12: the
# baseline of the upstream selftests).

SHELL     := /bin/bash
REPO      := $(CURDIR)
BUILD     := $(REPO)/build
SRC       := $(BUILD)/linux
FLAVOUR   ?= base
OBJ       := $(BUILD)/obj-$(FLAVOUR)
STOUT     := $(BUILD)/selftests
# The initramfs images are uncompressed cpio archives (bench/mkinitramfs:
# a guest unpacks gzip slowly).
RAMFS     := $(BUILD)/initramfs-$(FLAVOUR).cpio
# The QEMU cells' initramfs: every test of tests.conf, the upstream ones too.
RAMFS_FULL := $(BUILD)/initramfs-full.cpio
# bochs-tigerlake-tdp1's: the small one plus the QEMU scenario (its 13 MB
# cost the other Bochs cells about 30 s of boot each, gzip'ed).
RAMFS_E2E := $(BUILD)/initramfs-e2e.cpio
# The test sets of the small initramfs (Bochs cells with the short upstream
# set, demo, the debug flavour by hand).
SMALL_SETS := bochs bspp dbochs dqemu spp perf e2e
# The cells that run only the SPP tests (the other Bochs cells, the debug
# cells) boot an initramfs with only those (7.8 MB instead of 15 MB: a
# Bochs guest, the more so under KASAN, loads and unpacks it slowly;
# bench/run-cell).
RAMFS_SPP := $(BUILD)/initramfs-spp.cpio
SPP_SETS  := bspp dbochs dqemu spp perf
RESULTS   := $(BUILD)/results-$(FLAVOUR)
JOBS      ?= $(shell nproc)
CCACHE_DIR ?= /var/cache/kvm-spp/ccache
export CCACHE_DIR
# A -shadow cell runs KVM without TDP (shadow paging: npt=0 / ept=0).
# bench-selftest: the bench's own tests (bench/selftest, about 45 s).
CELLS     ?= bench-selftest bochs-tigerlake-tdp1 bochs-tigerlake-tdp0-noad \
             bochs-skylake-tdp1 bochs-skylake-tdp0 \
             bochs-tigerlake-tdp1-shadow \
             qemu-svm-tdp1 qemu-svm-tdp0 qemu-svm-tdp1-shadow
# Cells that `make check` also runs with the debug kernel (KASAN, lockdep,
# KVM_PROVE_MMU), SPP tests only; DEBUG_CELLS= skips the debug build.
DEBUG_CELLS ?= qemu-svm-tdp1 bochs-tigerlake-tdp1
BENCH_INJECT ?=
# A deliberate bug from bench/break/ (proves the bench catches it).
BENCH_BREAK ?=
export BENCH_BREAK
# PATCHES=none: the same bench on pristine 6.12 (the regression baseline:
# upstream selftests that pass there must pass with the series), with the
# selftests and initramfs of the patched tree (SPP tests then skip).
PATCHES   ?= all
ifeq ($(PATCHES),none)
SRC       := $(BUILD)/linux-none
OBJ       := $(BUILD)/obj-none
RESULTS   := $(BUILD)/results-none
RAMFS     := $(BUILD)/initramfs-base.cpio
DEBUG_CELLS :=
endif
export PATCHES

KMAKE = $(MAKE) -C $(SRC) O=$(OBJ) CC="ccache gcc" HOSTCC="ccache gcc" \
	-j$(JOBS) KCFLAGS="$(KCFLAGS)"

DEBS := build-essential bc bison flex libelf-dev libssl-dev cpio gzip lz4 rsync \
	xz-utils kmod ccache sparse linux-source-6.12 busybox-static \
	qemu-system-x86 bochs bochsbios vgabios bochs-term isolinux \
	syslinux-common xorriso \
	dpkg-dev meson ninja-build pkg-config libglib2.0-dev libpixman-1-dev \
	zlib1g-dev libfdt-dev python3-ply

CONFIGS := $(REPO)/bench/config/base.config \
	$(if $(filter debug,$(FLAVOUR)),$(REPO)/bench/config/debug.config)
ifeq ($(PATCHES),none)
# Pristine 6.12 has no SPP options.
CONFIGS := $(BUILD)/none.config
$(BUILD)/none.config: $(REPO)/bench/config/base.config
	@mkdir -p $(BUILD)
	grep -v KVM_SPP $< >$@
endif

.PHONY: all deps tree kernel selftests initramfs check run export export-check clean \
	debug-build qemu run-qemu FORCE

all: kernel selftests initramfs

# Debian packages: installed once, checked cheaply afterwards.
$(BUILD)/.deps: Makefile
	@mkdir -p $(BUILD) $(CCACHE_DIR)
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(DEBS) 2>/dev/null | \
		awk '$$NF!="installed"{print $$1}'; \
		for p in $(DEBS); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
		echo "  APT     $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@
deps: $(BUILD)/.deps

tree: $(BUILD)/.deps FORCE
	@$(REPO)/bench/prepare-tree $(SRC)

$(OBJ)/.config: $(CONFIGS) | tree
	@mkdir -p $(OBJ)
	$(KMAKE) -s tinyconfig
	cd $(SRC) && scripts/kconfig/merge_config.sh -m -O $(OBJ) \
		$(OBJ)/.config $(CONFIGS) >/dev/null
	$(KMAKE) -s olddefconfig
	@$(REPO)/bench/check-config $(OBJ)/.config $(CONFIGS)

kernel: tree $(OBJ)/.config
	@$(REPO)/bench/check-config $(OBJ)/.config $(CONFIGS)
	$(KMAKE) -s bzImage
	@ls -l $(OBJ)/arch/x86/boot/bzImage

# Selftests read the uAPI headers from $(SRC)/usr/include.  headers_install
# rewrites every header; only changed ones are copied there, so that a warm
# run rebuilds no selftest (and repacks no initramfs).
selftests: tree $(OBJ)/.config
	$(KMAKE) -s headers_install INSTALL_HDR_PATH=$(OBJ)/uapi-stage
	rsync -rc $(OBJ)/uapi-stage/include/ $(SRC)/usr/include/
	$(MAKE) -s -C $(SRC)/tools/testing/selftests/kvm OUTPUT=$(STOUT) \
		EXTRA_CFLAGS="-static" CC="ccache gcc" -j$(JOBS) \
		$(addprefix $(STOUT)/,$(shell $(REPO)/bench/test-list all))
	$(MAKE) -s -C $(SRC)/tools/kvm/spp_demo UAPI=$(SRC)/usr/include \
		OUT=$(STOUT)/spp_demo

# QEMU 7.2 from Debian 12's own source package plus qemu/series: the first
# VMM that uses SPP.  Its scenario (qemu/spp-e2e, QEMU guarding a Linux
# guest's IDT) is a test of the base initramfs; `make run-qemu` shows it.
QEMU_SRC   := $(BUILD)/qemu-src
QEMU_OBJ   := $(BUILD)/qemu-build
QEMU_BIN   := $(QEMU_OBJ)/qemu-system-x86_64
QEMU_STAMP := $(QEMU_SRC)/.kvm-spp-series
QEMU_CELL  ?= qemu-svm-tdp1

$(QEMU_STAMP): $(REPO)/qemu/series $(wildcard $(REPO)/qemu/patches/*.patch) \
		$(REPO)/qemu/fetch | $(BUILD)/.deps
	@$(REPO)/qemu/fetch $(QEMU_SRC)
	@touch $@

qemu: $(QEMU_STAMP)
	@$(REPO)/qemu/build $(QEMU_SRC) $(QEMU_OBJ)

ifeq ($(PATCHES),none)
initramfs:
	$(MAKE) PATCHES=all FLAVOUR=base initramfs
else ifeq ($(FLAVOUR),base)
# The bundle: QEMU, and the bench's own kernel as its guest.
BUNDLE := $(QEMU_BIN) $(OBJ)/arch/x86/boot/bzImage $(OBJ)/System.map
initramfs: selftests kernel qemu
	@$(REPO)/bench/mkinitramfs $(STOUT) $(RAMFS) $(SMALL_SETS)
	@$(REPO)/bench/mkinitramfs $(STOUT) $(RAMFS_SPP) $(SPP_SETS)
	@QEMU_BUNDLE="$(BUNDLE)" $(REPO)/bench/mkinitramfs $(STOUT) $(RAMFS_E2E) \
		$(SMALL_SETS)
	@QEMU_BUNDLE="$(BUNDLE)" $(REPO)/bench/mkinitramfs $(STOUT) $(RAMFS_FULL)
else
initramfs: selftests
	@$(REPO)/bench/mkinitramfs $(STOUT) $(RAMFS) $(SMALL_SETS)
endif

# The debug kernel: bench/matrix builds it (DEBUG_BUILD) in the background
# while the Bochs cells of the base flavour run (on a cold tree that hides
# most of its build time), and waits for it before any other cell.  The
# debug cells boot the base flavour's SPP initramfs (the same tests).
ifneq ($(strip $(DEBUG_CELLS)),)
ifeq ($(FLAVOUR),base)
DEBUG_BUILD := $(MAKE) -C $(REPO) --no-print-directory FLAVOUR=debug kernel
endif
endif
debug-build: kernel initramfs
	$(MAKE) FLAVOUR=debug kernel

check: kernel initramfs
	@DEBUG_BUILD="$(DEBUG_BUILD)" \
	 DEBUG_KERNEL=$(BUILD)/obj-debug/arch/x86/boot/bzImage \
	 DEBUG_INITRD=$(RAMFS_SPP) \
	 $(if $(filter base,$(FLAVOUR)),SPP_INITRD=$(RAMFS_SPP) SPP_SETS="$(SPP_SETS)") \
	 QEMU_INITRD=$(RAMFS_FULL) E2E_INITRD=$(RAMFS_E2E) \
	 DEBUG_OUT=$(BUILD)/results-debug \
	 $(REPO)/bench/matrix $(OBJ)/arch/x86/boot/bzImage $(RAMFS) \
		$(RESULTS) "$(BENCH_INJECT)" $(CELLS) \
		$(if $(filter base,$(FLAVOUR)),$(addsuffix @debug,$(DEBUG_CELLS)))

run: kernel initramfs
	@$(REPO)/bench/demo $(OBJ)/arch/x86/boot/bzImage $(RAMFS) $(BUILD)/demo

# The QEMU scenario alone, in one cell (QEMU_CELL=bochs-tigerlake-tdp1 for
# the SPP hardware path): its QMP transcript and the guest's console.
run-qemu: kernel initramfs
	@$(REPO)/bench/run-cell $(QEMU_CELL) $(OBJ)/arch/x86/boot/bzImage \
		$(if $(filter qemu-%,$(QEMU_CELL)),$(RAMFS_FULL),$(RAMFS_E2E)) \
		$(BUILD)/run-qemu none e2e >/dev/null; \
	sed -n 's/^#   //p' $(BUILD)/run-qemu/$(QEMU_CELL).log | tr -d '\r'; \
	cat $(BUILD)/run-qemu/$(QEMU_CELL).res; \
	grep -q ' PASS$$' $(BUILD)/run-qemu/$(QEMU_CELL).res

export: tree
	@$(REPO)/bench/export-series $(BUILD)/series

# Every prefix of the exported series builds (kernel with the bench's config,
# C=1 W=1 on the files each commit touches, KVM selftests) and passes
# checkpatch --strict, in a tree of its own (build/export-check).
export-check: $(BUILD)/.deps kernel
	@$(REPO)/bench/export-check

clean:
	rm -rf $(BUILD)

FORCE:
