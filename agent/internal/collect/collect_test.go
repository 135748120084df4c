package collect

import (
	"context"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

func TestFactsDescribeThisHost(t *testing.T) {
	f, err := Facts(t.Context(), "1.2.3")
	require.NoError(t, err)

	hostname, err := os.Hostname()
	require.NoError(t, err)
	assert.Equal(t, hostname, f.GetHostname())
	assert.Equal(t, runtime.GOOS, f.GetOs())
	assert.Equal(t, runtime.GOARCH, f.GetArch())
	assert.Equal(t, "1.2.3", f.GetAgentVersion())
	assert.NotZero(t, f.GetMemoryTotalBytes(), "memory total")
	assert.NotZero(t, f.GetCpuCount(), "cpu count")
	assert.NotEmpty(t, f.GetKernelVersion(), "kernel version")
	assert.True(t, f.GetUptime().IsValid(), "uptime")
	assert.True(t, f.GetBootTime().IsValid(), "boot time")
}

func TestFactsCarryTheSystemMachineID(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/etc/machine-id is Linux's")
	}
	b, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		t.Skipf("no /etc/machine-id here: %v", err)
	}
	want := strings.ToLower(strings.TrimSpace(string(b)))
	if want == "" || want == "uninitialized" {
		t.Skip("/etc/machine-id is not initialized here")
	}

	f, err := Facts(t.Context(), "dev")
	require.NoError(t, err)
	assert.Equal(t, want, f.GetMachineId())

	id, err := MachineID(t.Context())
	require.NoError(t, err)
	assert.Equal(t, want, id)
}

func TestFactsInterfacesAreWellFormed(t *testing.T) {
	f, err := Facts(t.Context(), "dev")
	require.NoError(t, err)

	loopback := map[string]bool{}
	system, err := net.Interfaces()
	require.NoError(t, err)
	for _, ifc := range system {
		if ifc.Flags&net.FlagLoopback != 0 {
			loopback[ifc.Name] = true
		}
	}

	for _, ifc := range f.GetInterfaces() {
		assert.NotEmpty(t, ifc.GetName())
		assert.False(t, loopback[ifc.GetName()], "loopback interface %s reported", ifc.GetName())
		_, err := net.ParseMAC(ifc.GetMac())
		assert.NoError(t, err, "interface %s mac %q", ifc.GetName(), ifc.GetMac())
		assert.Equal(t, strings.ToLower(ifc.GetMac()), ifc.GetMac(), "mac is lowercase")
		for _, a := range ifc.GetAddresses() {
			_, _, err := net.ParseCIDR(a)
			assert.NoError(t, err, "interface %s address %q", ifc.GetName(), a)
		}
		assert.True(t, slices.IsSorted(ifc.GetAddresses()), "addresses of %s sorted", ifc.GetName())
	}
	assert.True(t, slices.IsSortedFunc(f.GetInterfaces(), func(a, b *agentv1.NetworkInterface) int {
		return strings.Compare(a.GetName(), b.GetName())
	}), "interfaces sorted by name")
}

func TestFactsAreInAFixedOrder(t *testing.T) {
	first, err := Facts(t.Context(), "dev")
	require.NoError(t, err)
	second, err := Facts(t.Context(), "dev")
	require.NoError(t, err)

	require.Len(t, second.GetInterfaces(), len(first.GetInterfaces()))
	for i := range first.GetInterfaces() {
		assert.True(t, proto.Equal(first.GetInterfaces()[i], second.GetInterfaces()[i]),
			"interface %d: %v != %v", i, first.GetInterfaces()[i], second.GetInterfaces()[i])
	}

	// Used bytes move as the host writes; the disks and their order must not.
	require.Len(t, second.GetDisks(), len(first.GetDisks()))
	for i, d := range first.GetDisks() {
		o := second.GetDisks()[i]
		assert.Equal(t, []string{d.GetMountpoint(), d.GetDevice(), d.GetFstype()},
			[]string{o.GetMountpoint(), o.GetDevice(), o.GetFstype()}, "disk %d", i)
	}
	assert.True(t, slices.IsSortedFunc(first.GetDisks(), func(a, b *agentv1.Disk) int {
		return strings.Compare(a.GetMountpoint(), b.GetMountpoint())
	}), "disks sorted by mountpoint")

	// Everything but the figures that move with time is the same.
	for _, f := range []*agentv1.HostFacts{first, second} {
		f.Uptime, f.BootTime = nil, nil
		for _, d := range f.GetDisks() {
			d.UsedBytes = 0
		}
	}
	assert.True(t, proto.Equal(first, second), "facts differ between calls:\n%v\n%v", first, second)
}

func TestFactsDiskReportsNoPseudoFilesystems(t *testing.T) {
	f, err := Facts(t.Context(), "dev")
	require.NoError(t, err)
	devices := map[string]bool{}
	for _, d := range f.GetDisks() {
		assert.False(t, isPseudoFilesystem(d.GetFstype()), "%s is %s", d.GetMountpoint(), d.GetFstype())
		assert.False(t, devices[d.GetDevice()], "device %s listed twice", d.GetDevice())
		devices[d.GetDevice()] = true
	}
}

func TestFactsFromManyGoroutines(t *testing.T) {
	var wg sync.WaitGroup
	results := make([]*agentv1.HostFacts, 8)
	for i := range results {
		wg.Go(func() {
			f, err := Facts(t.Context(), "dev")
			assert.NoError(t, err)
			results[i] = f
		})
	}
	wg.Wait()
	for _, f := range results {
		require.NotNil(t, f)
		assert.Equal(t, results[0].GetMachineId(), f.GetMachineId())
		assert.Equal(t, results[0].GetCpuModel(), f.GetCpuModel())
	}
}

func TestFactsRefuseADoneContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f, err := Facts(ctx, "dev")
	assert.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, f)
}

func BenchmarkFacts(b *testing.B) {
	ctx := b.Context()
	// The first call reads what is kept for the life of the process; a
	// heartbeat pays only for the rest.
	if _, err := Facts(ctx, "dev"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Facts(ctx, "dev"); err != nil {
			b.Fatal(err)
		}
	}
}
