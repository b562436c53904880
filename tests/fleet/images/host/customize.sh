#!/bin/sh
# mmdebstrap --customize-hook for the fleet host images. $1 is the finished root file system;
# ABRI_RECIPE_DIR points at this folder and ABRI_SUITE names the Debian suite.
set -eu
root=$1
here=${ABRI_RECIPE_DIR:?}
suite=${ABRI_SUITE:?}

# Host keys are made per host at first boot (see ssh-hostkeys.conf), never baked into the image.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cp "$here/ssh-hostkeys.conf" "$root/etc/systemd/system/ssh.service.d/abri-hostkeys.conf"

# Debian 13's OpenSSH penalises sources after failed authentications; test hosts see many
# connections while they boot. Debian 12's OpenSSH does not know the option.
if [ "$suite" != bookworm ]; then
    cp "$here/sshd-abri.conf" "$root/etc/ssh/sshd_config.d/abri-test.conf"
fi

# root logs in with a key only (the harness copies authorized_keys in before the first start)
install -d -m 0700 "$root/root/.ssh"

# A container has no consoles, no udev, no kernel modules to load: keep boot quiet and fast.
for unit in getty@tty1.service console-getty.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-modules-load.service \
            systemd-firstboot.service systemd-networkd-wait-online.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# an empty machine-id: systemd makes a fresh one on every boot of every host
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo "abri-test-host" >"$root/etc/hostname"
