// Package collect gathers the facts the agent reports about the host it runs
// on: names and versions, the stable machine and hardware identifiers, CPU,
// memory, network interfaces and filesystems.
//
// Facts runs on every heartbeat, so it is kept cheap: it reads kernel and
// firmware files and system calls, never spawns a process on Linux, and keeps
// the facts that cannot change while the process runs (machine and hardware
// identifiers, serial number, CPU model and count, kernel version) after the
// first successful read. Everything it returns is in a fixed order, because
// the control plane hashes facts to notice when they change.
package collect

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// ErrNoMachineID is returned by MachineID when the platform offers no usable
// machine identifier.
var ErrNoMachineID = errors.New("no machine id found")

// Facts gathers the host facts. A fact that cannot be read is left empty
// rather than failing the call; the error is returned only when the host
// cannot even be named (no hostname) or ctx is already done.
//
// Uptime changes on every call, and the used bytes of each disk change as
// the host writes: callers that hash facts to detect change must leave them
// out. BootTime is read afresh each time, since the kernel moves it when the
// wall clock is stepped.
func Facts(ctx context.Context, agentVersion string) (*agentv1.HostFacts, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("collect facts: %w", err)
	}
	hostname, err := os.Hostname()
	if err == nil && hostname == "" {
		err = errors.New("empty hostname")
	}
	if err != nil {
		return nil, fmt.Errorf("collect facts: hostname: %w", err)
	}

	f := &agentv1.HostFacts{
		Hostname:     hostname,
		Os:           runtime.GOOS,
		Arch:         runtime.GOARCH,
		AgentVersion: agentVersion,
	}
	f.Platform, f.PlatformVersion = platform(ctx)
	f.KernelVersion = kernelVersion(ctx)
	if id, err := MachineID(ctx); err == nil {
		f.MachineId = id
	}
	hw := hardwareIdentity(ctx)
	f.HardwareId, f.SerialNumber = hw.uuid, hw.serial

	if bt, err := host.BootTimeWithContext(ctx); err == nil && bt > 0 && bt <= math.MaxInt64 {
		f.BootTime = timestamppb.New(time.Unix(int64(bt), 0))
	}
	if up, err := host.UptimeWithContext(ctx); err == nil && up <= uint64(math.MaxInt64/int64(time.Second)) {
		f.Uptime = durationpb.New(time.Duration(up) * time.Second)
	}

	c := cpuFacts(ctx)
	f.CpuCount, f.CpuModel = c.count, c.model
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		f.MemoryTotalBytes = vm.Total
	}

	f.Interfaces = interfaces(ctx)
	f.Disks = disks(ctx)
	return f, nil
}

// MachineID returns the stable machine identifier that keeps one identity
// per machine across re-installs: /etc/machine-id (or
// /var/lib/dbus/machine-id) on Linux, the IOPlatformUUID on macOS and the
// MachineGuid from HKLM\SOFTWARE\Microsoft\Cryptography on Windows. It is
// trimmed and lowercased. The error wraps ErrNoMachineID when none can be
// found.
func MachineID(ctx context.Context) (string, error) {
	var readErr error
	id := machineIDCache.get(func() (string, bool) {
		id, err := readMachineID(ctx)
		readErr = err
		return id, err == nil
	})
	if readErr != nil {
		return "", fmt.Errorf("machine id: %w", readErr)
	}
	return id, nil
}

// The facts that cannot change while the process runs, read once.
var (
	machineIDCache settled[string]
	hardwareCache  settled[hardware]
	kernelCache    settled[string]
	cpuCountCache  settled[uint32]
	cpuModelCache  settled[string]
)

// settled holds a value once a read of it has given a final answer. A read
// that failed in a way that may pass (a busy firmware, an interrupted
// process) is tried again on the next call.
type settled[T any] struct {
	mu   sync.Mutex
	done bool
	val  T
}

// get returns the settled value, or calls read and keeps its value when read
// reports it final. The lock is held during read so that concurrent callers
// do not repeat an expensive read.
func (s *settled[T]) get(read func() (T, bool)) T {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return s.val
	}
	v, final := read()
	if final {
		s.val, s.done = v, true
	}
	return v
}

// hardware is the firmware's identity of the machine.
type hardware struct {
	uuid   string
	serial string
}

// platformName is the operating system product and its version.
type platformName struct {
	name    string
	version string
}

func hardwareIdentity(ctx context.Context) hardware {
	return hardwareCache.get(func() (hardware, bool) { return readHardware(ctx) })
}

func kernelVersion(ctx context.Context) string {
	return kernelCache.get(func() (string, bool) {
		v, err := host.KernelVersionWithContext(ctx)
		return v, err == nil
	})
}

type cpuSummary struct {
	count uint32
	model string
}

func cpuFacts(ctx context.Context) cpuSummary {
	var c cpuSummary
	c.count = cpuCountCache.get(func() (uint32, bool) {
		n, err := cpu.CountsWithContext(ctx, true)
		if err != nil || n <= 0 {
			return 0, false
		}
		return uint32(min(n, math.MaxUint32)), true
	})
	c.model = cpuModelCache.get(func() (string, bool) {
		infos, err := cpu.InfoWithContext(ctx)
		if err != nil {
			return "", false
		}
		// Every entry names the same model on the machines agents run on;
		// the first one that names any is reported.
		for _, i := range infos {
			if i.ModelName != "" {
				return i.ModelName, true
			}
		}
		return "", true
	})
	return c
}
