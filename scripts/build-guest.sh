#!/usr/bin/env bash
# Builds the small Linux guest the tests boot under QEMU and libvirt
# (test/helpers/guest.ts), into .cache/guest/:
#   vmlinuz          Debian's kernel, unpacked from its package (never installed)
#   vmlinux          the same kernel uncompressed, an ELF that QEMU boots directly
#                    through its PVH entry point: under TCG, unpacking vmlinuz's
#                    xz payload takes the guest longer (3.5 s) than the boot itself
#   config           the kernel's build configuration; kernel-package: its package
#   modules/         the kernel modules the guest loads, with their modules.dep
#   initramfs.gz     static busybox, those modules, and an init that prints
#                    "VIRT-GRAPH-GUEST READY" on ttyS0, powers off on the ACPI
#                    power button, reboots on request and, given vg.load=cpu,disk,net
#                    on the kernel command line, keeps busy in the background
#   disk.qcow2       an empty qcow2 template the tests overlay or copy
# Needs the Debian packages busybox-static, qemu-utils and xz-utils
# (qemu-system-x86 to boot the guest), and apt to fetch the kernel package.
# Safe to run again: each step is skipped when its result is already in place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT=.cache/guest
# Modules loaded at boot (those the kernel has built in are left out): the ACPI
# power button and the input events acpid reads it from; virtio over PCI for
# the disks, NICs, consoles, balloon and RNG that QEMU and libvirt attach.
MODULES=(button evdev virtio_pci virtio_blk virtio_net virtio_console virtio_balloon virtio_rng)
# The ready marker the harness waits for; test/helpers/guest.ts has the same.
READY_MARKER='VIRT-GRAPH-GUEST READY'
DISK_SIZE=64M

log() { printf '\033[1m[guest]\033[0m %s\n' "$*" >&2; }

for tool in busybox qemu-img xz apt-get apt-cache dpkg-deb; do
  if ! command -v "$tool" >/dev/null; then
    log "$tool is missing (Debian packages: busybox-static qemu-utils xz-utils apt dpkg)"
    exit 1
  fi
done
BUSYBOX=$(command -v busybox)
# The initramfs has no C library: busybox must be the static build, with acpid.
applets=$("$BUSYBOX" --list)
if ldd "$BUSYBOX" >/dev/null 2>&1 || ! grep -qx acpid <<<"$applets"; then
  log "$BUSYBOX is not a static busybox with acpid (Debian package busybox-static)"
  exit 1
fi

mkdir -p "$OUT"
work=""
cleanup() { if [ -n "$work" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

# 1. The kernel: the versioned package linux-image-amd64 depends on, e.g.
# linux-image-6.1.0-57-amd64, fetched with apt-get download and unpacked in a
# scratch directory. Its /boot/config-* tells what is built in (=y) and what
# is a module (=m); modules.builtin is the same list by module name, and
# modules.dep (made here with busybox depmod: Debian ships none, kmod's depmod
# writes it on installation) names each module's dependencies.
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
if [ -f "$OUT/vmlinuz" ] && [ -d "$OUT/modules" ] && [ -f "$OUT/kernel-package" ] &&
  { [ -z "$kernel_pkg" ] || [ "$(cat "$OUT/kernel-package")" = "$kernel_pkg" ]; }; then
  log "kernel: $(cat "$OUT/kernel-package") already in $OUT"
else
  if [ -z "$kernel_pkg" ]; then
    log "apt-cache knows no linux-image-amd64 (run apt-get update)"
    exit 1
  fi
  work=$(mktemp -d "$OUT/.work.XXXXXX")
  apt_opts=(-qq)
  # As root, apt fetches as the _apt user, who cannot write to a private directory.
  if [ "$(id -u)" -eq 0 ]; then apt_opts+=(-o APT::Sandbox::User=root); fi
  (cd "$work" && apt-get download "${apt_opts[@]}" "$kernel_pkg" >/dev/null)
  dpkg-deb -x "$work"/"$kernel_pkg"_*.deb "$work/pkg"
  release=${kernel_pkg#linux-image-}
  src="$work/pkg/lib/modules/$release"
  if [ ! -f "$work/pkg/boot/vmlinuz-$release" ] || [ ! -d "$src" ]; then
    log "$kernel_pkg has no /boot/vmlinuz-$release or /lib/modules/$release"
    exit 1
  fi
  "$BUSYBOX" depmod -b "$work/pkg" "$release"
  # Each wanted module and what it depends on, by path under lib/modules/$release.
  # Module names treat - and _ alike (virtio_rng is virtio-rng.ko).
  wanted=() builtin=()
  for module in "${MODULES[@]}"; do
    pattern="/$(printf '%s' "$module" | sed 's/[-_]/[-_]/g')\.ko"
    line=$(grep -E "^[^:]*$pattern:" "$src/modules.dep" | head -n 1 || true)
    if [ -n "$line" ]; then
      # Dependencies first, in the order modules.dep gives them, then the module.
      for dep in ${line#*:}; do wanted+=("$dep"); done
      wanted+=("${line%%:*}")
    elif grep -qE "$pattern\$" "$src/modules.builtin"; then
      builtin+=("$module")
    else
      log "$kernel_pkg has no module $module, built in or loadable"
      exit 1
    fi
  done
  stage="$work/modules/lib/modules/$release"
  mkdir -p "$stage"
  for path in "${wanted[@]}"; do
    if [ ! -f "$stage/$path" ]; then
      mkdir -p "$stage/$(dirname "$path")"
      cp "$src/$path" "$stage/$path"
    fi
  done
  cp "$src/modules.builtin" "$src/modules.order" "$stage/"
  "$BUSYBOX" depmod -b "$work/modules" "$release"
  # Loaded by name at boot: the loadable ones only.
  loadable=()
  for module in "${MODULES[@]}"; do
    case " ${builtin[*]-} " in *" $module "*) ;; *) loadable+=("$module") ;; esac
  done
  printf '%s\n' "${loadable[@]}" >"$work/modules/load"
  cp "$work/pkg/boot/config-$release" "$work/config"
  rm -rf "$OUT/modules" "$OUT/vmlinuz" "$OUT/vmlinux" "$OUT/config" "$OUT/initramfs.gz" "$OUT/accel"
  mv "$work/modules" "$OUT/modules"
  mv "$work/config" "$OUT/config"
  mv "$work/pkg/boot/vmlinuz-$release" "$OUT/vmlinuz"
  printf '%s\n' "$kernel_pkg" >"$OUT/kernel-package"
  rm -rf "$work"
  work=""
  log "kernel: $kernel_pkg unpacked into $OUT (modules: ${loadable[*]}; built in: ${builtin[*]:-none})"
fi

# 2. The uncompressed kernel: vmlinuz is a boot stub followed by the kernel as
# an xz stream (busybox's unxz lacks the x86 BCJ filter it uses, xz has it);
# the first stream that unpacks to an ELF file is the kernel. Its Xen PVH note
# lets QEMU (-kernel) and libvirt (<kernel>) start it without the stub.
vmlinux="$OUT/vmlinux"
if [ -f "$vmlinux" ] && [ "$vmlinux" -nt "$OUT/vmlinuz" ]; then
  log "uncompressed kernel: already in $vmlinux"
else
  rm -f "$vmlinux"
  for offset in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$OUT/vmlinuz" | cut -d: -f1); do
    # xz stops with an error at the data after the stream: the kernel is whole by then.
    tail -c +$((offset + 1)) "$OUT/vmlinuz" | xz -dc >"$vmlinux.tmp" 2>/dev/null || true
    if [ "$(head -c 4 "$vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
      mv "$vmlinux.tmp" "$vmlinux"
      break
    fi
  done
  rm -f "$vmlinux.tmp"
  if [ ! -f "$vmlinux" ]; then
    log "found no xz-compressed ELF kernel in $OUT/vmlinuz"
    exit 1
  fi
  log "uncompressed kernel: $vmlinux ($(($(stat -c %s "$vmlinux") / 1048576)) MiB)"
fi

# 3. The initramfs (cpio newc, gzip): busybox init runs /etc/init.d/rcS, which
# mounts proc, sys and devtmpfs, loads the modules, starts acpid (the power
# button runs poweroff, which busybox init carries out: a clean, guest-made
# power off) and prints the ready marker; a shell stays on the console, so a
# test can type `reboot` or `poweroff`. The kernel's own console is ttyS0.
# Rebuilt when busybox or the modules are newer than it, or this script is.
initramfs="$OUT/initramfs.gz"
if [ -f "$initramfs" ] && [ -z "$(find "$BUSYBOX" "$OUT/modules" "$OUT/vmlinuz" scripts/build-guest.sh -newer "$initramfs" -print -quit)" ]; then
  log "initramfs: already in $initramfs"
else
  work=$(mktemp -d "$OUT/.work.XXXXXX")
  root="$work/root"
  mkdir -p "$root"/{bin,sbin,etc/init.d,etc/acpi,proc,sys,dev,run,tmp,root,lib,var}
  ln -s /run "$root/var/run"
  cp "$BUSYBOX" "$root/bin/busybox"
  for applet in $applets; do
    case "$applet" in busybox) continue ;; esac
    dir=bin
    case "$applet" in init | acpid | halt | poweroff | reboot | modprobe | insmod | rmmod | lsmod | depmod | mdev | getty | switch_root) dir=sbin ;; esac
    ln -s /bin/busybox "$root/$dir/$applet"
  done
  ln -s /sbin/init "$root/init"
  cp -a "$OUT/modules/lib/modules" "$root/lib/"
  cp "$OUT/modules/load" "$root/etc/modules"

  cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
EOF
  cat >"$root/etc/init.d/rcS" <<EOF
#!/bin/sh
# Runs once at boot, before the console shell.
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname virt-graph-guest
for module in \$(cat /etc/modules); do
  modprobe "\$module" || echo "virt-graph-guest: could not load \$module"
done
# The power button reaches acpid as an input event (button + evdev).
acpid -c /etc/acpi -a /etc/acpid.conf -l /dev/null -p /run/acpid.pid
disks=\$(echo \$(ls /sys/block | grep -v -e '^loop' -e '^ram'))
nics=\$(echo \$(ls /sys/class/net | grep -v '^lo\$'))
echo "virt-graph-guest: kernel \$(uname -r), disks: \${disks:-none}, nics: \${nics:-none}"
# Load for tests that measure the guest (vg.load=cpu,disk,net on the kernel
# command line): a busy loop; reads of the first disk that bypass the guest's
# page cache (else a second pass would never reach the host); pings from the
# first NIC to a neighbour that is never there (a static ARP entry, so each
# packet goes out as it is). Each runs in the background until power off.
for word in \$(cat /proc/cmdline); do
  case "\$word" in vg.load=*) loads=\$(echo "\${word#vg.load=}" | tr , ' ') ;; esac
done
for load in \${loads:-}; do
  case "\$load" in
    cpu) (while :; do :; done) & ;;
    disk)
      disk=\$(ls /sys/block | grep -v -e '^loop' -e '^ram' | head -n 1)
      if [ -n "\$disk" ]; then
        (while :; do dd if=/dev/\$disk of=/dev/null bs=64k iflag=direct 2>/dev/null; done) &
      fi ;;
    net)
      nic=\$(ls /sys/class/net | grep -v '^lo\$' | head -n 1)
      if [ -n "\$nic" ]; then
        ip link set "\$nic" up
        ip addr add 192.0.2.2/24 dev "\$nic"
        arp -i "\$nic" -s 192.0.2.1 02:00:00:00:00:01
        ping -q -s 1400 -i 0.1 192.0.2.1 >/dev/null 2>&1 &
      fi ;;
    *) echo "virt-graph-guest: unknown load \$load" ;;
  esac
done
if [ -n "\${loads:-}" ]; then echo "virt-graph-guest: load:" \$loads; fi
echo "$READY_MARKER"
EOF
  cat >"$root/etc/init.d/rcK" <<'EOF'
#!/bin/sh
# Runs when init powers off or reboots, before it stops every process.
echo "virt-graph-guest: going down"
sync
EOF
  # busybox acpid maps the power button (KEY_POWER) to the event PWRF and runs
  # the action named here from its configuration directory.
  printf 'PWRF power\n' >"$root/etc/acpid.conf"
  cat >"$root/etc/acpi/power" <<'EOF'
#!/bin/sh
echo "virt-graph-guest: power button pressed, powering off" >/dev/console
exec /sbin/poweroff
EOF
  printf 'export PS1="guest# "\nexport PATH=/sbin:/bin\n' >"$root/etc/profile"
  chmod 0755 "$root/etc/init.d/rcS" "$root/etc/init.d/rcK" "$root/etc/acpi/power"
  # Owned by root in the archive, whoever builds it.
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) |
    gzip -9n >"$work/initramfs.gz"
  mv "$work/initramfs.gz" "$initramfs"
  rm -f "$OUT/accel"
  rm -rf "$work"
  work=""
  log "initramfs: built $initramfs ($(($(stat -c %s "$initramfs") / 1024)) KiB)"
fi

# 4. An empty qcow2 disk template.
disk="$OUT/disk.qcow2"
if [ -f "$disk" ]; then
  log "disk template: already in $disk"
else
  qemu-img create -q -f qcow2 "$disk.tmp" "$DISK_SIZE"
  mv "$disk.tmp" "$disk"
  log "disk template: created $disk ($DISK_SIZE, qcow2)"
fi
