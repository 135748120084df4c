package collect

import (
	"testing"

	"github.com/shirou/gopsutil/v4/disk"
	"github.com/stretchr/testify/assert"

	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

func TestRealDisksKeepsStorageOnceInMountpointOrder(t *testing.T) {
	parts := []disk.PartitionStat{
		{Device: "/dev/nvme0n1p2", Mountpoint: "/home", Fstype: "btrfs"},
		{Device: "/dev/nvme0n1p2", Mountpoint: "/", Fstype: "btrfs"},
		{Device: "/dev/nvme0n1p1", Mountpoint: "/boot/efi", Fstype: "vfat"},
		{Device: "tmpfs", Mountpoint: "/run", Fstype: "tmpfs"},
		{Device: "/dev/loop3", Mountpoint: "/snap/core22/1380", Fstype: "squashfs"},
		{Device: "overlay", Mountpoint: "/var/lib/docker/overlay2/x/merged", Fstype: "overlay"},
		{Device: "cgroup2", Mountpoint: "/sys/fs/cgroup", Fstype: "cgroup2"},
		{Device: "lxcfs", Mountpoint: "/var/lib/lxcfs", Fstype: "fuse.lxcfs"},
		{Device: "/dev/sdb1", Mountpoint: "/media/usb", Fstype: "fuseblk"},
		{Device: "/dev/sdc1", Mountpoint: "/srv", Fstype: "xfs"},
		{Device: "", Mountpoint: "/nowhere", Fstype: "ext4"},
	}
	usage := func(mountpoint string) (uint64, uint64, bool) {
		if mountpoint == "/srv" {
			return 0, 0, false // e.g. a filesystem that went away
		}
		return 100, 40, true
	}

	got := realDisks(parts, usage)

	want := []*agentv1.Disk{
		{Mountpoint: "/", Device: "/dev/nvme0n1p2", Fstype: "btrfs", TotalBytes: 100, UsedBytes: 40},
		{Mountpoint: "/boot/efi", Device: "/dev/nvme0n1p1", Fstype: "vfat", TotalBytes: 100, UsedBytes: 40},
		{Mountpoint: "/media/usb", Device: "/dev/sdb1", Fstype: "fuseblk", TotalBytes: 100, UsedBytes: 40},
		{Mountpoint: "/srv", Device: "/dev/sdc1", Fstype: "xfs"},
	}
	assert.Len(t, got, len(want))
	for i := range want {
		if i < len(got) {
			assert.Equal(t, want[i].String(), got[i].String(), "disk %d", i)
		}
	}
}

func TestIsPseudoFilesystem(t *testing.T) {
	for _, fs := range []string{"tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "fuse.gvfsd-fuse", "devfs", "autofs", "TMPFS"} {
		assert.True(t, isPseudoFilesystem(fs), fs)
	}
	for _, fs := range []string{"ext4", "xfs", "btrfs", "zfs", "apfs", "NTFS", "FAT32", "vfat", "fuseblk", "exfat"} {
		assert.False(t, isPseudoFilesystem(fs), fs)
	}
}
