//go:build darwin

package collect

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v4/host"
	"golang.org/x/sys/unix"
)

// platformExpertCache holds the one ioreg run per process that gives the
// machine id, the hardware id and the serial number.
var platformExpertCache settled[platformExpert]

type platformExpert struct {
	uuid   string // cleaned; also the machine id
	serial string // cleaned
	err    error  // why ioreg gave nothing, until it does
}

// ioregTimeout bounds the ioreg run; it normally takes a few milliseconds.
const ioregTimeout = 5 * time.Second

func readPlatformExpert(ctx context.Context) platformExpert {
	return platformExpertCache.get(func() (platformExpert, bool) {
		ctx, cancel := context.WithTimeout(ctx, ioregTimeout)
		defer cancel()
		// The full path keeps a PATH set by whoever started the agent
		// from choosing the program.
		out, err := exec.CommandContext(ctx, "/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice").Output()
		if err != nil {
			return platformExpert{err: fmt.Errorf("ioreg: %w", err)}, false
		}
		uuid, serial := parsePlatformExpert(out)
		return platformExpert{uuid: cleanHardwareID(uuid), serial: cleanSerial(serial)}, true
	})
}

func readMachineID(ctx context.Context) (string, error) {
	pe := readPlatformExpert(ctx)
	if pe.err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoMachineID, pe.err)
	}
	if pe.uuid == "" {
		return "", fmt.Errorf("%w: IOPlatformUUID missing or unset", ErrNoMachineID)
	}
	return pe.uuid, nil
}

func readHardware(ctx context.Context) (hardware, bool) {
	pe := readPlatformExpert(ctx)
	return hardware{uuid: pe.uuid, serial: pe.serial}, pe.err == nil
}

// platformCache holds the macOS version, which only changes across a reboot.
var platformCache settled[platformName]

// platform reads the product version with sysctl (macOS 10.13.4 and later)
// rather than running sw_vers as gopsutil does.
func platform(ctx context.Context) (name, version string) {
	p := platformCache.get(func() (platformName, bool) {
		name := "darwin"
		if t, err := unix.Sysctl("kern.ostype"); err == nil && t != "" {
			name = strings.ToLower(t)
		}
		if v, err := unix.Sysctl("kern.osproductversion"); err == nil && v != "" {
			return platformName{name: name, version: v}, true
		}
		_, _, v, err := host.PlatformInformationWithContext(ctx)
		if err != nil || v == "" {
			return platformName{name: name}, false
		}
		return platformName{name: name, version: v}, true
	})
	return p.name, p.version
}
