//go:build linux

package collect

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// machineIDFiles are where systemd and D-Bus keep the machine id; the D-Bus
// copy is the older location, still the only one on some distributions.
var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

func readMachineID(_ context.Context) (string, error) {
	return machineIDFrom(machineIDFiles)
}

// machineIDFrom returns the first usable machine id in files. An empty file
// or the "uninitialized" marker systemd writes until first boot completes
// is skipped.
func machineIDFrom(files []string) (string, error) {
	var errs []error
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		id := strings.ToLower(strings.TrimSpace(string(b)))
		if id == "" || id == "uninitialized" {
			errs = append(errs, fmt.Errorf("%s: not initialized", name))
			continue
		}
		return id, nil
	}
	return "", fmt.Errorf("%w: %w", ErrNoMachineID, errors.Join(errs...))
}

// dmiDir is where the kernel exposes the SMBIOS identity of the machine.
const dmiDir = "/sys/class/dmi/id"

func readHardware(_ context.Context) (hardware, bool) {
	return hardwareFrom(dmiDir)
}

// hardwareFrom reads the product UUID and serial from dir. Both files are
// readable only by root on most distributions and absent on machines
// without SMBIOS (most ARM boards); either outcome is final for this
// process, so only other errors ask for another try.
func hardwareFrom(dir string) (hardware, bool) {
	uuid, uuidFinal := readDMI(dir + "/product_uuid")
	serial, serialFinal := readDMI(dir + "/product_serial")
	return hardware{uuid: cleanHardwareID(uuid), serial: cleanSerial(serial)}, uuidFinal && serialFinal
}

func readDMI(name string) (value string, final bool) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)
	}
	return string(b), true
}

// osReleaseFiles are the os-release(5) locations, in order of precedence.
var osReleaseFiles = []string{"/etc/os-release", "/usr/lib/os-release"}

// platform reads the distribution from os-release on every call, since a
// distribution upgrade changes it without a restart. gopsutil's platform
// lookup is not used: it runs lsb_release on some systems.
func platform(_ context.Context) (name, version string) {
	for _, file := range osReleaseFiles {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		name, version = parseOSRelease(b)
		break
	}
	// Debian's VERSION_ID is only the major release ("12"); the point
	// release ("12.11") is in debian_version.
	if name == "debian" {
		if b, err := os.ReadFile("/etc/debian_version"); err == nil {
			if v := strings.TrimSpace(string(b)); v != "" && v[0] >= '0' && v[0] <= '9' {
				version = v
			}
		}
	}
	return name, version
}

// parseOSRelease returns ID and VERSION_ID from an os-release file.
func parseOSRelease(b []byte) (id, versionID string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		value = unquoteOSRelease(value)
		switch key {
		case "ID":
			id = strings.ToLower(value)
		case "VERSION_ID":
			versionID = value
		}
	}
	return id, versionID
}

// osReleaseUnescape undoes the backslash escapes os-release(5) allows
// inside double quotes.
var osReleaseUnescape = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`")

// unquoteOSRelease removes the shell quoting os-release values may carry.
func unquoteOSRelease(v string) string {
	if len(v) < 2 {
		return v
	}
	switch q := v[0]; {
	case q == '\'' && v[len(v)-1] == q:
		return v[1 : len(v)-1]
	case q == '"' && v[len(v)-1] == q:
		return osReleaseUnescape.Replace(v[1 : len(v)-1])
	}
	return v
}
