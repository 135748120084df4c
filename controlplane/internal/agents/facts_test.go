package agents

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestFactsHashIgnoresWhatIsNotAChange(t *testing.T) {
	boot := time.Date(2026, 11, 1, 8, 0, 10, 0, time.UTC)
	base := func() *Facts {
		b := boot
		return &Facts{Hostname: "h", OS: "linux", MachineID: "m", BootTime: &b, UptimeSeconds: 100,
			Interfaces: []Interface{{Name: "eth1", MAC: "02:00:00:00:00:02"}, {Name: "eth0", MAC: "02:00:00:00:00:01", Addresses: []string{"b", "a"}}},
			Disks:      []Disk{{Mountpoint: "/", TotalBytes: 100, UsedBytes: 10}}}
	}
	h := base().Hash()
	same := []func(*Facts){
		func(f *Facts) { f.UptimeSeconds = 999 },
		func(f *Facts) { f.Disks[0].UsedBytes = 90 },
		func(f *Facts) { f.Interfaces[0], f.Interfaces[1] = f.Interfaces[1], f.Interfaces[0] },
		func(f *Facts) { f.Interfaces[1].Addresses = []string{"a", "b"} },
		func(f *Facts) { b := boot.Add(time.Second); f.BootTime = &b },
	}
	for i, change := range same {
		f := base()
		change(f)
		assert.Equal(t, h, f.Hash(), "case %d is not a change", i)
		assert.Empty(t, f.Changed(base()), "case %d", i)
	}
	different := map[string]func(*Facts){
		"hostname":   func(f *Facts) { f.Hostname = "h2" },
		"interfaces": func(f *Facts) { f.Interfaces[1].Addresses = []string{"c"} },
		"disks":      func(f *Facts) { f.Disks[0].TotalBytes = 200 },
		"boot_time":  func(f *Facts) { b := boot.Add(time.Hour); f.BootTime = &b },
	}
	for field, change := range different {
		f := base()
		change(f)
		assert.NotEqual(t, h, f.Hash(), field)
		assert.Equal(t, []string{field}, f.Changed(base()))
	}
}
