package collect

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMachineIDFromFallsBackToDBus(t *testing.T) {
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc-machine-id")
	dbus := filepath.Join(dir, "dbus-machine-id")
	require.NoError(t, os.WriteFile(dbus, []byte("3D1219C7C4C5404AAA1F6D2A48ADFDA4\n"), 0o644))

	// Missing, then empty, then systemd's first-boot marker: all fall through.
	for _, etcContent := range []*string{nil, ptr(""), ptr("uninitialized\n")} {
		if etcContent != nil {
			require.NoError(t, os.WriteFile(etc, []byte(*etcContent), 0o644))
		}
		id, err := machineIDFrom([]string{etc, dbus})
		require.NoError(t, err)
		assert.Equal(t, "3d1219c7c4c5404aaa1f6d2a48adfda4", id)
	}

	require.NoError(t, os.WriteFile(etc, []byte(" 0123456789abcdef0123456789abcdef \n"), 0o644))
	id, err := machineIDFrom([]string{etc, dbus})
	require.NoError(t, err)
	assert.Equal(t, "0123456789abcdef0123456789abcdef", id)
}

func TestMachineIDFromNothing(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))

	_, err := machineIDFrom([]string{filepath.Join(dir, "missing"), empty})
	assert.ErrorIs(t, err, ErrNoMachineID)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestHardwareFromDMI(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "product_uuid"), []byte("4C4C4544-0042-3510-8052-B7C04F4E3732\n"), 0o400))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "product_serial"), []byte("To Be Filled By O.E.M.\n"), 0o400))

	hw, final := hardwareFrom(dir)
	assert.True(t, final)
	assert.Equal(t, hardware{uuid: "4c4c4544-0042-3510-8052-b7c04f4e3732"}, hw)

	// No SMBIOS at all (most ARM boards) is a final answer too.
	hw, final = hardwareFrom(filepath.Join(dir, "missing"))
	assert.True(t, final)
	assert.Equal(t, hardware{}, hw)
}

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		name, file, id, version string
	}{
		{"debian", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n", "debian", "12"},
		{"ubuntu", "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n", "ubuntu", "24.04"},
		{"single quotes", "ID='fedora'\nVERSION_ID='40'\n", "fedora", "40"},
		{"rolling release", "# comment\nID=arch\nBUILD_ID=rolling\n", "arch", ""},
		{"escapes", "ID=\"Odd\"\nVERSION_ID=\"1 \\\"beta\\\"\"\n", "odd", `1 "beta"`},
		{"empty", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, version := parseOSRelease([]byte(tt.file))
			assert.Equal(t, tt.id, id)
			assert.Equal(t, tt.version, version)
		})
	}
}

func ptr[T any](v T) *T { return &v }
