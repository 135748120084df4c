package jsoncheck

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct {
		name, body, kind, pointer string
	}{
		{"object", `{"a":[1,{"b":"c"}],"d":null}`, "", ""},
		{"scalar", `"x"`, "", ""},
		{"escapes that are text", `{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\u2028"}`, "", ""},
		{"a real U+FFFD", "{\"s\":\"\uFFFD\"}", "", ""},
		{"64 levels", deep(64), "", ""},
		{"65 levels", deep(65), KindTooDeep, ""},
		{"10 000 levels", deep(10000), KindTooDeep, ""},
		{"deep in an object", `{"a":{"b":` + deep(70) + `}}`, KindTooDeep, ""},
		{"two values", `{} {}`, KindSyntax, ""},
		{"empty", ``, KindSyntax, ""},
		{"truncated", `{"a":`, KindSyntax, ""},
		{"duplicate key", `{"a":{"x/y":1,"x/y":2}}`, KindDuplicateKey, "#/a/x~1y"},
		{"duplicate in an array", `[0,{"k":1,"k":1}]`, KindDuplicateKey, "#/1/k"},
		{"NUL escape", `{"a":"x\u0000y"}`, KindInvalidText, ""},
		{"NUL escape in a key", `{"a\u0000":1}`, KindInvalidText, ""},
		{"raw NUL", "{\"a\":\"x\x00\"}", KindSyntax, ""},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", KindInvalidText, ""},
		{"overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", KindInvalidText, ""},
		{"lone high surrogate", `{"a":"\ud800"}`, KindInvalidText, ""},
		{"high surrogate then text", `{"a":"\ud800\u0041"}`, KindInvalidText, ""},
		{"lone low surrogate", `{"a":"\udc00"}`, KindInvalidText, ""},
		{"escaped backslash before u", `{"a":"\\u0000"}`, "", ""},
		{"NUL-looking text outside strings is syntax", `{"a":1}\u0000`, KindSyntax, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Check([]byte(tc.body), 0)
			if tc.kind == "" {
				assert.Nil(t, err)
				return
			}
			require.NotNil(t, err)
			assert.Equal(t, tc.kind, err.Kind, err.Detail)
			if tc.pointer != "" {
				assert.Equal(t, tc.pointer, err.Pointer)
			}
		})
	}
}

// TestCheckDeepBodiesAreCheap: a megabyte of brackets is refused after
// reading the first MaxDepth+1 of them, with memory that does not grow with
// the depth of the input.
func TestCheckDeepBodiesAreCheap(t *testing.T) {
	for _, n := range []int{10_000, 1_000_000} {
		body := []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
		allocs := testing.AllocsPerRun(3, func() {
			err := Check(body, 0)
			require.NotNil(t, err)
			require.Equal(t, KindTooDeep, err.Kind)
		})
		assert.Less(t, allocs, 200.0, "allocations for depth %d", n)
	}
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{}`, `[1,2]`, `{"a":"\u0000"}`, `{"a":1,"a":2}`, `"\ud800"`, "\xff", `[[[[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := Check(body, 8)
		if err == nil {
			// What passes must be one valid JSON value.
			if !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			return
		}
		if err.Kind == "" || err.Detail == "" {
			t.Fatalf("refusal without a kind or detail: %+v", err)
		}
	})
}
