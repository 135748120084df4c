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
	"io"
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
func Check(body []byte, maxDepth int) *Error {
	if maxDepth <= 0 {
		maxDepth = MaxDepth
	}
	if err := checkText(body); err != nil {
		return err
	}
	c := checker{dec: json.NewDecoder(bytes.NewReader(body)), maxDepth: maxDepth}
	c.dec.UseNumber()
	if err := c.value(); err != nil {
		return err
	}
	if _, err := c.dec.Token(); err != io.EOF {
		return &Error{Kind: KindSyntax, Detail: "the body holds more than one JSON value", Offset: c.dec.InputOffset()}
	}
	return nil
}

// checkText refuses bytes that are not UTF-8, and escapes inside strings that
// decode to half of a surrogate pair (NUL is found with its pointer later). It tracks only whether it is
// inside a string; the structural pass finds every other syntax error.
func checkText(body []byte) *Error {
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
	inString := false
	for i := 0; i < len(body); i++ {
		switch b := body[i]; {
		case b == '"':
			inString = !inString
		case b == '\\' && inString:
			if i+1 >= len(body) {
				return nil // the structural pass reports the truncation
			}
			if body[i+1] != 'u' {
				i++ // a one-character escape, possibly \" or \\
				continue
			}
			u, ok := hex4(body, i+2)
			if !ok {
				return nil // malformed escape: a syntax error the decoder names
			}
			switch {
			case u >= 0xDC00 && u <= 0xDFFF:
				return invalidEscape(i, fmt.Sprintf(`the escape \u%04x is half of a UTF-16 surrogate pair without its first half`, u))
			case u >= 0xD800 && u <= 0xDBFF:
				low, ok := uint16(0), i+11 < len(body) && body[i+6] == '\\' && body[i+7] == 'u'
				if ok {
					low, ok = hex4(body, i+8)
				}
				if !ok || low < 0xDC00 || low > 0xDFFF {
					return invalidEscape(i, fmt.Sprintf(`the escape \u%04x is half of a UTF-16 surrogate pair without its second half`, u))
				}
				i += 11
				continue
			}
			i += 5
		}
	}
	return nil
}

func hex4(b []byte, at int) (uint16, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[at:at+4]), 16, 16)
	return uint16(n), err == nil
}

func invalidEscape(offset int, detail string) *Error {
	return &Error{Kind: KindInvalidText, Detail: fmt.Sprintf("%s (at byte %d)", detail, offset), Offset: int64(offset)}
}

// checker walks the value tree with a stack of path segments, so a pointer
// costs nothing until one is reported.
type checker struct {
	dec      *json.Decoder
	maxDepth int
	path     []segment
}

type segment struct {
	key   string
	index int // -1 for an object key
}

func (c *checker) value() *Error {
	tok, err := c.dec.Token()
	if err != nil {
		return c.syntax(err)
	}
	switch v := tok.(type) {
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			return nulError(c)
		}
		return nil
	case json.Delim:
		if len(c.path) >= c.maxDepth {
			return &Error{Kind: KindTooDeep, Detail: fmt.Sprintf("the body nests arrays and objects deeper than %d levels", c.maxDepth),
				Pointer: c.pointer(), Offset: c.dec.InputOffset()}
		}
		if v == '{' {
			if err := c.object(); err != nil {
				return err
			}
		} else if err := c.array(); err != nil {
			return err
		}
		if _, err := c.dec.Token(); err != nil { // the closing delimiter
			return c.syntax(err)
		}
	}
	return nil
}

func (c *checker) object() *Error {
	var seen map[string]struct{}
	for c.dec.More() {
		kt, err := c.dec.Token()
		if err != nil {
			return c.syntax(err)
		}
		key, _ := kt.(string)
		if seen == nil {
			seen = map[string]struct{}{}
		}
		c.path = append(c.path, segment{key: key, index: -1})
		if _, dup := seen[key]; dup {
			return &Error{Kind: KindDuplicateKey, Detail: fmt.Sprintf("the key %q appears twice in one object", key),
				Pointer: c.pointer(), Offset: c.dec.InputOffset()}
		}
		if strings.IndexByte(key, 0) >= 0 {
			return nulError(c)
		}
		seen[key] = struct{}{}
		if err := c.value(); err != nil {
			return err
		}
		c.path = c.path[:len(c.path)-1]
	}
	return nil
}

func (c *checker) array() *Error {
	for i := 0; c.dec.More(); i++ {
		c.path = append(c.path, segment{index: i})
		if err := c.value(); err != nil {
			return err
		}
		c.path = c.path[:len(c.path)-1]
	}
	return nil
}

func nulError(c *checker) *Error {
	return &Error{Kind: KindInvalidText, Detail: fmt.Sprintf(`the escape \u0000 (NUL) is not allowed in text (before byte %d)`, c.dec.InputOffset()),
		Pointer: c.pointer(), Offset: c.dec.InputOffset()}
}

func (c *checker) syntax(err error) *Error {
	off := c.dec.InputOffset()
	detail := "the body is not valid JSON"
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		off = syn.Offset
		detail = fmt.Sprintf("the body is not valid JSON: %v (at byte %d)", syn, syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		detail = fmt.Sprintf("the body is not valid JSON: it ends early (at byte %d)", off)
	}
	return &Error{Kind: KindSyntax, Detail: detail, Offset: off}
}

// pointer renders the current path as a JSON pointer in fragment form.
func (c *checker) pointer() string {
	var b strings.Builder
	b.WriteString("#")
	for _, s := range c.path {
		b.WriteByte('/')
		if s.index >= 0 {
			b.WriteString(strconv.Itoa(s.index))
			continue
		}
		b.WriteString(EscapePointer(s.key))
	}
	return b.String()
}

// EscapePointer escapes one reference token of a JSON pointer (RFC 6901).
func EscapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
