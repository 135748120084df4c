package collect

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/shirou/gopsutil/v4/disk"

	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// pseudoFilesystems are the filesystem types that hold no storage of the
// host's own: kernel interfaces, memory-backed and container layers, and
// read-only images mounted by package managers (snap).
var pseudoFilesystems = map[string]bool{
	"autofs": true, "binfmt_misc": true, "bpf": true, "configfs": true,
	"debugfs": true, "devfs": true, "devpts": true, "devtmpfs": true,
	"efivarfs": true, "fdesc": true, "fusectl": true, "hugetlbfs": true,
	"mqueue": true, "nsfs": true, "nullfs": true, "overlay": true,
	"overlayfs": true, "aufs": true, "proc": true, "pstore": true,
	"ramfs": true, "rootfs": true, "rpc_pipefs": true, "securityfs": true,
	"selinuxfs": true, "squashfs": true, "sysfs": true, "tmpfs": true,
	"tracefs": true, "lxcfs": true, "none": true,
}

// isPseudoFilesystem reports whether fstype holds no storage of its own. The
// cgroup family and FUSE subtypes (fuse.lxcfs, fuse.gvfsd-fuse, fuse.sshfs)
// are matched by prefix; fuseblk, FUSE over a real block device, is kept.
func isPseudoFilesystem(fstype string) bool {
	t := strings.ToLower(fstype)
	return pseudoFilesystems[t] || strings.HasPrefix(t, "cgroup") || strings.HasPrefix(t, "fuse.")
}

// disks returns the host's real mounted filesystems, or nil when they cannot
// be listed.
func disks(ctx context.Context) []*agentv1.Disk {
	// Windows reports unreadable volumes as an error next to the ones it
	// could read, so a partial list is still used.
	parts, _ := disk.PartitionsWithContext(ctx, false)
	if len(parts) == 0 {
		return nil
	}
	return realDisks(parts, func(mountpoint string) (total, used uint64, ok bool) {
		u, err := disk.UsageWithContext(ctx, mountpoint)
		if err != nil {
			return 0, 0, false
		}
		return u.Total, u.Used, true
	})
}

// realDisks drops pseudo filesystems and later mounts of a device already
// listed (bind mounts, btrfs subvolumes), sorted by mountpoint, and fills in
// the sizes from usage. A filesystem whose size cannot be read is kept with
// zero sizes.
func realDisks(parts []disk.PartitionStat, usage func(mountpoint string) (total, used uint64, ok bool)) []*agentv1.Disk {
	kept := make([]disk.PartitionStat, 0, len(parts))
	for _, p := range parts {
		if p.Mountpoint == "" || p.Device == "" || isPseudoFilesystem(p.Fstype) {
			continue
		}
		kept = append(kept, p)
	}
	// Sorted by device after mountpoint so that the mount kept for a device
	// mounted twice is always the same one.
	slices.SortFunc(kept, func(a, b disk.PartitionStat) int {
		return cmp.Or(cmp.Compare(a.Mountpoint, b.Mountpoint), cmp.Compare(a.Device, b.Device))
	})

	out := make([]*agentv1.Disk, 0, len(kept))
	seen := make(map[string]bool, len(kept))
	for _, p := range kept {
		if seen[p.Device] {
			continue
		}
		seen[p.Device] = true
		d := &agentv1.Disk{Mountpoint: p.Mountpoint, Device: p.Device, Fstype: p.Fstype}
		if total, used, ok := usage(p.Mountpoint); ok {
			d.TotalBytes, d.UsedBytes = total, used
		}
		out = append(out, d)
	}
	return out
}
