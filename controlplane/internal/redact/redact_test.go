package redact

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestTextMasksMACsAndAddresses(t *testing.T) {
	r := Redactor{key: make([]byte, 32)}
	for in, want := range map[string]string{
		"Unauthorized device de:ad:be:ef:00:01 at 192.0.2.66": "Unauthorized device de:ad:be:xx:xx:xx at 192.0.2.x",
		"device DE-AD-BE-EF-00-01":                            "device de:ad:be:xx:xx:xx",
		"device dead.beef.0001":                               "device de:ad:be:xx:xx:xx",
		"first seen at 192.0.2.66.":                           "first seen at 192.0.2.x.",
		"new address 2001:db8:0:1::42":                        "new address 2001:db8:0:1::x",
		"new address fe80::1%eth0":                            "new address fe80:0:0:0::x%eth0",
		"at [2001:db8::1]:443 and 192.0.2.66:8080":            "at [2001:db8:0:0::x]:443 and 192.0.2.x:8080",
		"192.0.2.10/24":                                       "192.0.2.x/24",
		"allowlist mac:02:00:5e:10:00:01":                     "allowlist mac:02:00:5e:xx:xx:xx",
		"allowlist cidr:192.0.2.0/28":                         "allowlist cidr:192.0.2.x/28",
		"host-192.0.2.7 and ::ffff:198.51.100.9":              "host-192.0.2.x and 198.51.100.x",
		"src:192.0.2.1:8080 via mac:fe80::1":                  "src:192.0.2.x:8080 via mac:fe80:0:0::x",
		"aa:bb:cc:dd:ee:ff,11:22:33:44:55:66":                 "aa:bb:cc:xx:xx:xx,11:22:33:xx:xx:xx",
		// Nothing to mask: left exactly as it was.
		"seen at 2026-11-28T10:00:00.123456Z":          "seen at 2026-11-28T10:00:00.123456Z",
		"asset 01934b7e-b300-7000-8000-000000000001":   "asset 01934b7e-b300-7000-8000-000000000001",
		"allowlist oui:00:1b:63":                       "allowlist oui:00:1b:63",
		"kernel 6.1.0-28-amd64, note: see ticket #12.": "kernel 6.1.0-28-amd64, note: see ticket #12.",
		"the CFO's new laptop":                         "the CFO's new laptop",
		"":                                             "",
		"Unauthorized device de:ad:be:xx:xx:xx at 192.0.2.x": "Unauthorized device de:ad:be:xx:xx:xx at 192.0.2.x",
	} {
		assert.Equal(t, want, r.Text(in), in)
		assert.Equal(t, want, r.Text(want), "masking twice changes nothing: %s", in)
	}
}

func TestIP(t *testing.T) {
	r := Redactor{key: make([]byte, 32)}
	for in, want := range map[string]string{
		"192.0.2.66": "192.0.2.x", "::ffff:192.0.2.66": "192.0.2.x", "2001:db8:0:1:2:3:4:5": "2001:db8:0:1::x",
		"192.0.2.10/24": "192.0.2.x/24", "fe80::1/64": "fe80:0:0:0::x/64", "not an address": "x", "": "x",
	} {
		assert.Equal(t, want, r.IP(in), in)
	}
}

func TestTextIsLinearOnLongRuns(t *testing.T) {
	r := Redactor{key: make([]byte, 32)}
	long := strings.Repeat("1.", 5000) + "192.0.2.66"
	start := time.Now()
	out := r.Text(long)
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.NotContains(t, out, "192.0.2.66")
}

func TestDetailsAndContent(t *testing.T) {
	r := Redactor{key: make([]byte, 32)}
	in := map[string]any{
		"mac": "de:ad:be:ef:00:01", "ip": "192.0.2.66", "previous": []any{"192.0.2.65", "2001:db8::7"},
		"hostname": "berlin-nuc-1", "note": "moved from 192.0.2.9", "observation_id": "01934b7e-b200-7000-8000-000000000001",
		"away_seconds": float64(7200), "nested": map[string]any{"address": "198.51.100.3", "macs": []string{"00:1b:63:aa:bb:cc"}},
	}
	d := r.Details(in)
	assert.Equal(t, "de:ad:be:xx:xx:xx", d["mac"])
	assert.Equal(t, r.Hash("de:ad:be:ef:00:01"), d["mac_hash"])
	assert.Equal(t, "192.0.2.x", d["ip"])
	assert.Equal(t, []any{"192.0.2.x", "2001:db8:0:0::x"}, d["previous"])
	assert.Equal(t, "berlin-nuc-1", d["hostname"], "host names are kept")
	assert.Equal(t, "moved from 192.0.2.x", d["note"], "notes are kept, their addresses masked")
	assert.Equal(t, in["observation_id"], d["observation_id"])
	assert.Equal(t, float64(7200), d["away_seconds"])
	assert.Equal(t, map[string]any{"address": "198.51.100.x", "macs": []string{"00:1b:63:xx:xx:xx"}}, d["nested"])
	assert.Equal(t, "de:ad:be:ef:00:01", in["mac"], "the input is not changed")

	c := r.Content(in)
	assert.Equal(t, d["mac"], c["mac"])
	assert.Equal(t, d["mac_hash"], c["mac_hash"])
	assert.Equal(t, "[redacted]", c["hostname"])
	assert.Equal(t, "[redacted]", c["note"])
	assert.Equal(t, map[string]any{"address": "198.51.100.x", "macs": "[redacted]"}, c["nested"])
}

// TestMaskedNeedsNoKey: Masked is Text for records every reader reads
// alike, such as audit events.
func TestMaskedNeedsNoKey(t *testing.T) {
	assert.Equal(t, "moved next to 02:de:ad:xx:xx:xx at 198.51.100.x", Masked("moved next to 02:DE:AD:BE:EF:42 at 198.51.100.142"))
	assert.Equal(t, "the CFO's laptop", Masked("the CFO's laptop"))
}
