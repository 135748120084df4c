package agents

import (
	"crypto/sha256"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// Facts is the stored form of an agent's host facts: the JSON shape of the
// REST HostFacts schema, whichever protocol delivered them.
type Facts struct {
	Hostname         string      `json:"hostname,omitempty"`
	OS               string      `json:"os,omitempty"`
	Platform         string      `json:"platform,omitempty"`
	PlatformVersion  string      `json:"platform_version,omitempty"`
	KernelVersion    string      `json:"kernel_version,omitempty"`
	Arch             string      `json:"arch,omitempty"`
	AgentVersion     string      `json:"agent_version,omitempty"`
	MachineID        string      `json:"machine_id,omitempty"`
	HardwareID       string      `json:"hardware_id,omitempty"`
	SerialNumber     string      `json:"serial_number,omitempty"`
	BootTime         *time.Time  `json:"boot_time,omitempty"`
	UptimeSeconds    int64       `json:"uptime_seconds,omitempty"`
	CPUCount         int         `json:"cpu_count,omitempty"`
	CPUModel         string      `json:"cpu_model,omitempty"`
	MemoryTotalBytes int64       `json:"memory_total_bytes,omitempty"`
	Interfaces       []Interface `json:"interfaces,omitempty"`
	Disks            []Disk      `json:"disks,omitempty"`
}

// Interface is one of the host's network interfaces.
type Interface struct {
	Name      string   `json:"name"`
	MAC       string   `json:"mac,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
}

// Disk is one mounted filesystem.
type Disk struct {
	Mountpoint string `json:"mountpoint"`
	Device     string `json:"device,omitempty"`
	FSType     string `json:"fstype,omitempty"`
	TotalBytes int64  `json:"total_bytes,omitempty"`
	UsedBytes  int64  `json:"used_bytes,omitempty"`
}

// Limits on what an agent may report about its host. Agents are not
// trusted to be well-behaved: a NUL byte or a megabyte hostname must not
// reach PostgreSQL (which rejects NUL in text and jsonb).
const (
	maxFactLen   = 500
	maxFactItems = 256
	maxAddresses = 64
)

// clean makes an agent-supplied string safe to store: valid UTF-8, no NUL,
// bounded length.
func clean(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	s = strings.ToValidUTF8(s, "")
	if len(s) > maxFactLen {
		s = strings.ToValidUTF8(s[:maxFactLen], "")
	}
	return s
}

// sanitize applies clean to every string and bounds every list.
func (f *Facts) sanitize() *Facts {
	for _, p := range []*string{&f.Hostname, &f.OS, &f.Platform, &f.PlatformVersion, &f.KernelVersion, &f.Arch, &f.AgentVersion,
		&f.MachineID, &f.HardwareID, &f.SerialNumber, &f.CPUModel} {
		*p = clean(*p)
	}
	if len(f.Interfaces) > maxFactItems {
		f.Interfaces = f.Interfaces[:maxFactItems]
	}
	for i := range f.Interfaces {
		x := &f.Interfaces[i]
		x.Name, x.MAC = clean(x.Name), clean(x.MAC)
		if len(x.Addresses) > maxAddresses {
			x.Addresses = x.Addresses[:maxAddresses]
		}
		for j := range x.Addresses {
			x.Addresses[j] = clean(x.Addresses[j])
		}
	}
	if len(f.Disks) > maxFactItems {
		f.Disks = f.Disks[:maxFactItems]
	}
	for i := range f.Disks {
		d := &f.Disks[i]
		d.Mountpoint, d.Device, d.FSType = clean(d.Mountpoint), clean(d.Device), clean(d.FSType)
	}
	return f
}

// factsFromProto converts the Connect form.
func factsFromProto(p *agentv1.HostFacts) *Facts {
	if p == nil {
		return nil
	}
	f := &Facts{
		Hostname: p.GetHostname(), OS: p.GetOs(), Platform: p.GetPlatform(), PlatformVersion: p.GetPlatformVersion(),
		KernelVersion: p.GetKernelVersion(), Arch: p.GetArch(), AgentVersion: p.GetAgentVersion(), MachineID: p.GetMachineId(),
		HardwareID: p.GetHardwareId(), SerialNumber: p.GetSerialNumber(), CPUCount: int(p.GetCpuCount()), CPUModel: p.GetCpuModel(),
		MemoryTotalBytes: clampCount(p.GetMemoryTotalBytes()),
	}
	if p.BootTime != nil {
		t := p.BootTime.AsTime().UTC()
		f.BootTime = &t
	}
	if p.Uptime != nil {
		f.UptimeSeconds = int64(p.Uptime.AsDuration().Seconds())
	}
	for _, i := range p.GetInterfaces() {
		f.Interfaces = append(f.Interfaces, Interface{Name: i.GetName(), MAC: strings.ToLower(i.GetMac()), Addresses: i.GetAddresses()})
	}
	for _, d := range p.GetDisks() {
		f.Disks = append(f.Disks, Disk{Mountpoint: d.GetMountpoint(), Device: d.GetDevice(), FSType: d.GetFstype(), TotalBytes: clampCount(d.GetTotalBytes()), UsedBytes: clampCount(d.GetUsedBytes())})
	}
	return f.sanitize()
}

// factsFromAPI converts the REST form.
func factsFromAPI(a *api.HostFacts) *Facts {
	if a == nil {
		return nil
	}
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	i64 := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	f := &Facts{
		Hostname: s(a.Hostname), OS: s(a.Os), Platform: s(a.Platform), PlatformVersion: s(a.PlatformVersion),
		KernelVersion: s(a.KernelVersion), Arch: s(a.Arch), AgentVersion: s(a.AgentVersion), MachineID: s(a.MachineId),
		HardwareID: s(a.HardwareId), SerialNumber: s(a.SerialNumber), CPUModel: s(a.CpuModel),
		UptimeSeconds: i64(a.UptimeSeconds), MemoryTotalBytes: i64(a.MemoryTotalBytes),
	}
	if a.CpuCount != nil {
		f.CPUCount = *a.CpuCount
	}
	if a.BootTime != nil {
		t := a.BootTime.UTC()
		f.BootTime = &t
	}
	if a.Interfaces != nil {
		for _, i := range *a.Interfaces {
			x := Interface{Name: i.Name, MAC: strings.ToLower(s(i.Mac))}
			if i.Addresses != nil {
				x.Addresses = *i.Addresses
			}
			f.Interfaces = append(f.Interfaces, x)
		}
	}
	if a.Disks != nil {
		for _, d := range *a.Disks {
			f.Disks = append(f.Disks, Disk{Mountpoint: d.Mountpoint, Device: s(d.Device), FSType: s(d.Fstype), TotalBytes: i64(d.TotalBytes), UsedBytes: i64(d.UsedBytes)})
		}
	}
	return f.sanitize()
}

// bootTimeResolution (seconds) absorbs the jitter of boot times that some
// systems derive from the clock and the uptime; a reboot moves it by more.
const bootTimeResolution = 60

// stable is the part of the facts whose change is worth a timeline entry:
// everything but uptime and how full the disks are, with lists in a fixed
// order.
func (f *Facts) stable() Facts {
	c := *f
	c.UptimeSeconds = 0
	if f.BootTime != nil {
		b := time.Unix(f.BootTime.Unix()/bootTimeResolution*bootTimeResolution, 0).UTC()
		c.BootTime = &b
	}
	c.Interfaces = append([]Interface(nil), f.Interfaces...)
	sort.Slice(c.Interfaces, func(i, j int) bool { return c.Interfaces[i].Name < c.Interfaces[j].Name })
	for i := range c.Interfaces {
		a := append([]string(nil), c.Interfaces[i].Addresses...)
		sort.Strings(a)
		c.Interfaces[i].Addresses = a
	}
	c.Disks = nil
	for _, d := range f.Disks {
		d.UsedBytes = 0
		c.Disks = append(c.Disks, d)
	}
	sort.Slice(c.Disks, func(i, j int) bool { return c.Disks[i].Mountpoint < c.Disks[j].Mountpoint })
	return c
}

// Hash fingerprints the stable facts. It runs for every report, so it
// feeds the hash directly instead of encoding the facts first.
func (f *Facts) Hash() []byte {
	h := sha256.New()
	var buf [20]byte
	str := func(s string) {
		h.Write(strconv.AppendInt(buf[:0], int64(len(s)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	num := func(n int64) {
		h.Write(strconv.AppendInt(buf[:0], n, 10))
		h.Write([]byte{';'})
	}
	for _, s := range []string{f.Hostname, f.OS, f.Platform, f.PlatformVersion, f.KernelVersion, f.Arch, f.AgentVersion,
		f.MachineID, f.HardwareID, f.SerialNumber, f.CPUModel} {
		str(s)
	}
	if f.BootTime != nil {
		num(f.BootTime.Unix() / bootTimeResolution)
	} else {
		num(-1)
	}
	num(int64(f.CPUCount))
	num(f.MemoryTotalBytes)
	ifaces := sortedOrder(len(f.Interfaces), func(a, b int) bool { return f.Interfaces[a].Name < f.Interfaces[b].Name })
	num(int64(len(ifaces)))
	for _, i := range ifaces {
		x := f.Interfaces[i]
		str(x.Name)
		str(x.MAC)
		addrs := x.Addresses
		if !sort.StringsAreSorted(addrs) {
			addrs = append([]string(nil), addrs...)
			sort.Strings(addrs)
		}
		num(int64(len(addrs)))
		for _, a := range addrs {
			str(a)
		}
	}
	disks := sortedOrder(len(f.Disks), func(a, b int) bool { return f.Disks[a].Mountpoint < f.Disks[b].Mountpoint })
	num(int64(len(disks)))
	for _, i := range disks {
		d := f.Disks[i]
		str(d.Mountpoint)
		str(d.Device)
		str(d.FSType)
		num(d.TotalBytes) // used bytes change all the time: not a change of the host
	}
	return h.Sum(nil)
}

// sortedOrder is the order of n elements under less, without moving them.
func sortedOrder(n int, less func(a, b int) bool) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return less(order[a], order[b]) })
	return order
}

// Changed lists the JSON names of the stable fields that differ.
func (f *Facts) Changed(old *Facts) []string {
	if old == nil {
		return nil
	}
	a, b := f.stable(), old.stable()
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			name := strings.Split(va.Type().Field(i).Tag.Get("json"), ",")[0]
			out = append(out, name)
		}
	}
	return out
}

// Addresses lists the host's IP addresses (without prefix length) and MACs.
func (f *Facts) Addresses() (ips, macs []string) {
	for _, i := range f.Interfaces {
		if i.MAC != "" {
			macs = append(macs, i.MAC)
		}
		for _, a := range i.Addresses {
			ip, _, _ := strings.Cut(a, "/")
			ips = append(ips, ip)
		}
	}
	sort.Strings(ips)
	sort.Strings(macs)
	return ips, macs
}

// MaxInteger is the largest integer the API stores and answers: 2^53-1, the
// largest that every JSON reader holds exactly (I-JSON, RFC 7493; a
// JavaScript console or a float64 decoder would misread anything larger).
const MaxInteger = 1<<53 - 1

// clampCount holds an agent's counter within MaxInteger; no real counter
// comes near it, so a larger one is a corrupt report's and is kept at the
// maximum instead of being refused with the rest of the report.
func clampCount(u uint64) int64 {
	return int64(min(u, MaxInteger))
}
