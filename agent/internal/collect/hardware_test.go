package collect

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCleanSerialDropsVendorPlaceholders(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"PF2ABCDE", "PF2ABCDE"},
		{"  C02XK1ZZJG5J \n", "C02XK1ZZJG5J"},
		{"VMware-56 4d 2b 1f 3a 8c 1e 2d-9a 1b 7c 6d 5e 4f 3a 2b", "VMware-56 4d 2b 1f 3a 8c 1e 2d-9a 1b 7c 6d 5e 4f 3a 2b"},
		{"0000-0002-1234-5678", "0000-0002-1234-5678"},
		{"10", "10"},
		{"", ""},
		{"   \n", ""},
		{"To Be Filled By O.E.M.", ""},
		{"To be filled by O.E.M.\n", ""},
		{"TO BE FILLED BY OEM", ""},
		{"Default string", ""},
		{"System Serial Number", ""},
		{"Chassis Serial Number", ""},
		{"0", ""},
		{"00000000", ""},
		{"XXXXXXXXXX", ""},
		{"........", ""},
		{"None", ""},
		{"N/A", ""},
		{"Not Specified", ""},
		{"Not Applicable", ""},
		{"Unknown", ""},
		{"0123456789", ""},
		{"OEM", ""},
		{"Default string\x00", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, cleanSerial(tt.in))
		})
	}
}

func TestCleanHardwareID(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"4C4C4544-0042-3510-8052-B7C04F4E3732\n", "4c4c4544-0042-3510-8052-b7c04f4e3732"},
		{"ec2a8f3b-9c1e-4d0b-8f21-3a5d6e7f8091", "ec2a8f3b-9c1e-4d0b-8f21-3a5d6e7f8091"},
		{"", ""},
		{"00000000-0000-0000-0000-000000000000", ""},
		{"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", ""},
		{"03000200-0400-0500-0006-000700080009", ""},
		{"00020003-0004-0005-0006-000700080009", ""},
		{"Not Settable", ""},
		{"ec2a8f3b9c1e4d0b8f213a5d6e7f8091", ""},
		{"ec2a8f3b-9c1e-4d0b-8f21-3a5d6e7f809g", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, cleanHardwareID(tt.in))
		})
	}
}

func TestParsePlatformExpert(t *testing.T) {
	out := []byte(`+-o Mac14,2  <class IOPlatformExpertDevice, id 0x100000209, registered, matched, active, busy 0 (263 ms), retain 41>
    {
      "IOPolledInterface" = "AppleARMWatchdogTimerHibernateHandler is not serializable"
      "#address-cells" = <02000000>
      "IOPlatformSerialNumberExtra" = "not this one"
      "serial-number" = <4b4a34363832504b354300000000000000000000000000000000000000000000>
      "IOPlatformUUID" = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
      "IOBusyInterest" = "IOCommand is not serializable"
      "model" = <"Mac14,2">
      "IOPlatformSerialNumber" = "KJ4682PK5C"
      "compatible" = <"J413AP","Mac14,2","AppleARM">
    }
`)
	uuid, serial := parsePlatformExpert(out)
	assert.Equal(t, "3F2504E0-4F89-11D3-9A0C-0305E82C3301", uuid)
	assert.Equal(t, "KJ4682PK5C", serial)

	uuid, serial = parsePlatformExpert([]byte("ioreg: nothing matched\n"))
	assert.Empty(t, uuid)
	assert.Empty(t, serial)
}
