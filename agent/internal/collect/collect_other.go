//go:build !linux && !darwin && !windows

package collect

import (
	"context"
	"fmt"
	"strings"

	"github.com/shirou/gopsutil/v4/host"
)

// readMachineID asks gopsutil for the host id the system offers (the BSDs'
// kern.hostuuid or /etc/hostid).
func readMachineID(ctx context.Context) (string, error) {
	id, err := host.HostIDWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoMachineID, err)
	}
	id = strings.ToLower(strings.TrimSpace(id))
	if id == "" {
		return "", ErrNoMachineID
	}
	return id, nil
}

// readHardware reports nothing where no cheap source is known.
func readHardware(context.Context) (hardware, bool) {
	return hardware{}, true
}

func platform(ctx context.Context) (name, version string) {
	name, _, version, _ = host.PlatformInformationWithContext(ctx)
	return name, version
}
