package enrollment

import (
	"strings"
	"testing"
)

func TestRoundTripAndChecksum(t *testing.T) {
	tenant := [16]byte{1, 2, 3}
	fp := [32]byte{9, 8, 7}
	s, tok := New(tenant, fp)
	if !strings.HasPrefix(s, Prefix) || len(s) != TokenLen {
		t.Fatalf("bad token %q", s)
	}
	got, err := Parse(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != tok || got.TenantID != tenant || got.CAFingerprint != fp {
		t.Fatalf("round trip: %+v != %+v", got, tok)
	}
	for _, bad := range []string{"", s[:len(s)-1], "ew_" + s[4:], strings.ToUpper(s), s[:30] + flip(s[30]) + s[31:]} {
		if _, err := Parse(bad); err != ErrMalformed {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}
