package collect

import (
	"bufio"
	"bytes"
	"strings"
)

// placeholderSerials are the values firmware vendors leave in the SMBIOS
// serial number fields when no serial was programmed. They are shared by
// thousands of machines, so reporting one would make them look alike.
var placeholderSerials = map[string]bool{
	"to be filled by o.e.m.":   true,
	"to be filled by oem":      true,
	"o.e.m.":                   true,
	"oem":                      true,
	"default string":           true,
	"system serial number":     true,
	"chassis serial number":    true,
	"base board serial number": true,
	"serial number":            true,
	"serialnumber":             true,
	"none":                     true,
	"null":                     true,
	"n/a":                      true,
	"na":                       true,
	"not applicable":           true,
	"not available":            true,
	"not specified":            true,
	"not set":                  true,
	"unknown":                  true,
	"invalid":                  true,
	"empty":                    true,
	"0123456789":               true,
	"123456789":                true,
	"1234567890":               true,
}

// cleanSerial returns the serial number s trimmed, or "" when s is one of
// the placeholders vendors put there, or a single character repeated
// ("0", "00000000", "XXXXXXXX", "........").
func cleanSerial(s string) string {
	s = strings.TrimSpace(strings.Trim(s, "\x00"))
	if s == "" || placeholderSerials[strings.ToLower(s)] || repeatsOneChar(s) {
		return ""
	}
	return s
}

func repeatsOneChar(s string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] != s[0] {
			return false
		}
	}
	return true
}

// placeholderUUIDs are SMBIOS system UUIDs that firmware ships unset: the
// all-zero and all-ones values, and the sequence American Megatrends
// firmware leaves on many boards (in both of the byte orders SMBIOS
// versions before and after 2.6 print it in).
var placeholderUUIDs = map[string]bool{
	"00000000-0000-0000-0000-000000000000": true,
	"ffffffff-ffff-ffff-ffff-ffffffffffff": true,
	"03000200-0400-0500-0006-000700080009": true,
	"00020003-0004-0005-0006-000700080009": true,
}

// cleanHardwareID returns the hardware UUID s trimmed and lowercased, or ""
// when s is not a UUID or is one of the values firmware leaves unset.
func cleanHardwareID(s string) string {
	s = strings.ToLower(strings.TrimSpace(strings.Trim(s, "\x00")))
	if !isUUID(s) || placeholderUUIDs[s] {
		return ""
	}
	return s
}

// isUUID reports whether s has the textual UUID form
// xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx in lowercase hex.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// parsePlatformExpert reads the IOPlatformUUID and IOPlatformSerialNumber
// properties from the output of `ioreg -rd1 -c IOPlatformExpertDevice`,
// whose property lines read `"IOPlatformUUID" = "3F2504E0-..."`. Values are
// returned as printed; the caller cleans them.
func parsePlatformExpert(out []byte) (uuid, serial string) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		key, value, ok := ioregStringProperty(sc.Text())
		if !ok {
			continue
		}
		switch key {
		case "IOPlatformUUID":
			uuid = value
		case "IOPlatformSerialNumber":
			serial = value
		}
	}
	return uuid, serial
}

// ioregStringProperty splits a line `"key" = "value"`; properties of other
// kinds (numbers, <data>, dictionaries) are not reported.
func ioregStringProperty(line string) (key, value string, ok bool) {
	line = strings.TrimSpace(line)
	k, v, found := strings.Cut(line, " = ")
	if !found || len(k) < 2 || len(v) < 2 || k[0] != '"' || k[len(k)-1] != '"' || v[0] != '"' || v[len(v)-1] != '"' {
		return "", "", false
	}
	return k[1 : len(k)-1], v[1 : len(v)-1], true
}
