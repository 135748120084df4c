// Package jsoncheck decides whether a request body is JSON the control plane
// is willing to decode, before any decoder or validator builds a value from
// it. Every JSON body that enters the control plane passes here: REST
// requests (in the httpx gate) and the agent protocol's Connect JSON.
//
// It refuses what a lenient decoder would quietly accept or a deep one would
// choke on:
//   - anything but exactly one JSON value;
//   - nesting deeper than a bound (each level costs the decoders that follow
//     stack and memory; a 100 KB body of brackets once exhausted memory);
//   - an object with a repeated key (a decoder resolves it one way, a
//     validator another);
//   - text PostgreSQL cannot store or that is not text at all: bytes that are
//     not UTF-8, the escape \u0000, and UTF-16 surrogate escapes that do not
//     pair up (decoders turn those into U+FFFD instead of refusing them).
//
// The check runs in time and memory linear in the body. A JSON pointer to
// the failing value is built only when there is a failure to report.
package jsoncheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxDepth is the nesting bound of every JSON body: no request of the API
// comes close (the deepest schema nests five levels).
const MaxDepth = 64

// Kinds of failure. Callers map them to their protocol's error codes.
const (
	// KindSyntax: not exactly one well-formed JSON value.
	KindSyntax = "syntax"
	// KindTooDeep: arrays and objects nest deeper than the bound.
	KindTooDeep = "too_deep"
	// KindDuplicateKey: one object names a key twice.
	KindDuplicateKey = "duplicate_key"
	// KindInvalidText: bytes that are not UTF-8, a \u0000 escape, or an
	// unpaired surrogate escape.
	KindInvalidText = "invalid_text"
)

// Error says why a body was refused.
type Error struct {
	Kind   string
	Detail string
	// Pointer is the JSON pointer (RFC 6901, in URI fragment form "#/a/0")
	// of the offending value, when it is known.
	Pointer string
	// Offset is the byte offset of the failure, when it is known (-1 if not).
	Offset int64
}

func (e *Error) Error() string { return e.Detail }

// Check returns nil when body is exactly one JSON value within maxDepth
// levels of nesting, with unique object keys and text that is valid Unicode
// without NUL characters. maxDepth <= 0 means MaxDepth.
//
// It runs in three linear passes, each cheap enough for the largest body:
// nesting first (a deep body is refused before anything keeps a stack for
// it), then syntax (encoding/json's validator), then keys and text.
func Check(body []byte, maxDepth int) *Error {
	if maxDepth <= 0 {
		maxDepth = MaxDepth
	}
	if !utf8.Valid(body) {
		off := 0
		for off < len(body) {
			r, size := utf8.DecodeRune(body[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		return &Error{Kind: KindInvalidText, Detail: fmt.Sprintf("the body is not valid UTF-8 (at byte %d)", off), Offset: int64(off)}
	}
	if err := checkDepth(body, maxDepth); err != nil {
		return err
	}
	if !json.Valid(body) {
		return syntaxError(body)
	}
	return checkKeysAndText(body)
}

// checkDepth counts brackets outside strings. It needs no valid syntax.
func checkDepth(body []byte, maxDepth int) *Error {
	depth, inString := 0, false
	for i := 0; i < len(body); i++ {
		b := body[i]
		if inString {
			switch b {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			if depth++; depth > maxDepth {
				return &Error{Kind: KindTooDeep, Detail: fmt.Sprintf("the body nests arrays and objects deeper than %d levels (at byte %d)", maxDepth, i),
					Offset: int64(i)}
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}

// syntaxError explains why encoding/json refused body.
func syntaxError(body []byte) *Error {
	var raw json.RawMessage
	err := json.Unmarshal(body, &raw)
	var syn *json.SyntaxError
	if !errors.As(err, &syn) {
		return &Error{Kind: KindSyntax, Detail: "the body is not valid JSON", Offset: -1}
	}
	detail := fmt.Sprintf("the body is not valid JSON: %v (at byte %d)", syn, syn.Offset)
	switch {
	case strings.Contains(syn.Error(), "after top-level value"):
		detail = fmt.Sprintf("the body holds more than one JSON value (the second starts at byte %d)", syn.Offset)
	case strings.Contains(syn.Error(), "unexpected end"):
		detail = fmt.Sprintf("the body is not valid JSON: it ends early (at byte %d)", syn.Offset)
	case len(bytes.TrimSpace(body)) == 0:
		detail = "the body is empty"
	}
	return &Error{Kind: KindSyntax, Detail: detail, Offset: syn.Offset}
}

// frame is one open array or object of checkKeysAndText.
type frame struct {
	object    bool
	index     int    // the current element of an array
	key       string // the current key of an object
	expectKey bool
	// keys seen in an object: a short list, then a set past 16 keys.
	few  []string
	many map[string]struct{}
}

// seen records key and reports whether the object had it already.
func (f *frame) seen(key string) bool {
	if f.many != nil {
		if _, dup := f.many[key]; dup {
			return true
		}
		f.many[key] = struct{}{}
		return false
	}
	for _, k := range f.few {
		if k == key {
			return true
		}
	}
	f.few = append(f.few, key)
	if len(f.few) > 16 {
		f.many = make(map[string]struct{}, 2*len(f.few))
		for _, k := range f.few {
			f.many[k] = struct{}{}
		}
		f.few = nil
	}
	return false
}

// checkKeysAndText walks a body that is valid JSON, refusing repeated keys,
// NUL and unpaired surrogate escapes, naming where they are.
func checkKeysAndText(body []byte) *Error {
	var stack []frame
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '{':
			stack = append(stack, frame{object: true, expectKey: true})
		case '[':
			stack = append(stack, frame{})
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			if top := &stack[len(stack)-1]; top.object {
				top.expectKey = true
			} else {
				top.index++
			}
		case ':':
			stack[len(stack)-1].expectKey = false
		case '"':
			start := i
			escaped, nul := false, false
			for i++; body[i] != '"'; i++ {
				if body[i] != '\\' {
					continue
				}
				escaped = true
				if body[i+1] != 'u' {
					i++
					continue
				}
				u, _ := hex4(body, i+2) // valid JSON: four hex digits follow
				nul = nul || u == 0
				n, err := checkSurrogate(body, i, u, stack)
				if err != nil {
					return err
				}
				i += n - 1
			}
			raw := body[start : i+1]
			if len(stack) == 0 || !stack[len(stack)-1].object || !stack[len(stack)-1].expectKey {
				if nul {
					return nulAt(start, stack)
				}
				continue
			}
			top := &stack[len(stack)-1]
			key := string(raw[1 : len(raw)-1])
			if escaped {
				_ = json.Unmarshal(raw, &key) // valid JSON: cannot fail
			}
			top.key = key
			if strings.IndexByte(key, 0) >= 0 {
				return nulAt(start, stack)
			}
			if top.seen(key) {
				return &Error{Kind: KindDuplicateKey, Detail: fmt.Sprintf("the key %q appears twice in one object", key),
					Pointer: pointer(stack), Offset: int64(start)}
			}
		}
	}
	return nil
}

// checkSurrogate refuses the \u escape u at i when it is half of a
// surrogate pair, and returns how many bytes the escape (or pair) takes.
func checkSurrogate(body []byte, i int, u uint16, stack []frame) (int, *Error) {
	switch {
	case u >= 0xDC00 && u <= 0xDFFF:
		return 0, &Error{Kind: KindInvalidText, Pointer: pointer(stack), Offset: int64(i),
			Detail: fmt.Sprintf(`the escape \u%04x is half of a UTF-16 surrogate pair without its first half (at byte %d)`, u, i)}
	case u >= 0xD800 && u <= 0xDBFF:
		low, ok := uint16(0), i+11 < len(body) && body[i+6] == '\\' && body[i+7] == 'u'
		if ok {
			low, ok = hex4(body, i+8)
		}
		if !ok || low < 0xDC00 || low > 0xDFFF {
			return 0, &Error{Kind: KindInvalidText, Pointer: pointer(stack), Offset: int64(i),
				Detail: fmt.Sprintf(`the escape \u%04x is half of a UTF-16 surrogate pair without its second half (at byte %d)`, u, i)}
		}
		return 12, nil
	}
	return 6, nil
}

func hex4(b []byte, at int) (uint16, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[at:at+4]), 16, 16)
	return uint16(n), err == nil
}

func nulAt(offset int, stack []frame) *Error {
	return &Error{Kind: KindInvalidText, Detail: fmt.Sprintf(`the escape \u0000 (NUL) is not allowed in text (at byte %d)`, offset),
		Pointer: pointer(stack), Offset: int64(offset)}
}

// pointer renders the path to the current value as a JSON pointer in
// fragment form; it is built only for an error.
func pointer(stack []frame) string {
	var b strings.Builder
	b.WriteString("#")
	for _, f := range stack {
		b.WriteByte('/')
		if f.object {
			b.WriteString(EscapePointer(f.key))
			continue
		}
		b.WriteString(strconv.Itoa(f.index))
	}
	return b.String()
}

// EscapePointer escapes one reference token of a JSON pointer (RFC 6901).
func EscapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
