//go:build windows

package collect

import (
	"context"
	"fmt"
	"strings"

	"github.com/shirou/gopsutil/v4/host"
)

// readMachineID returns the MachineGuid Windows setup writes under
// HKLM\SOFTWARE\Microsoft\Cryptography.
func readMachineID(ctx context.Context) (string, error) {
	id, err := host.HostIDWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: MachineGuid: %w", ErrNoMachineID, err)
	}
	id = strings.ToLower(strings.TrimSpace(id))
	if id == "" {
		return "", fmt.Errorf("%w: MachineGuid is empty", ErrNoMachineID)
	}
	return id, nil
}

// readHardware reports nothing on Windows: gopsutil offers no cheap way to
// the SMBIOS UUID or serial number, and WMI is too heavy for a heartbeat.
func readHardware(context.Context) (hardware, bool) {
	return hardware{}, true
}

// platformCache holds the Windows product and release, which only change
// across a reboot.
var platformCache settled[platformName]

// platform returns the product name ("Microsoft Windows 11 Pro") and its
// display version ("23H2"), read from the registry.
func platform(ctx context.Context) (name, version string) {
	p := platformCache.get(func() (platformName, bool) {
		name, _, version, err := host.PlatformInformationWithContext(ctx)
		if err != nil {
			return platformName{}, false
		}
		return platformName{name: name, version: version}, true
	})
	return p.name, p.version
}
