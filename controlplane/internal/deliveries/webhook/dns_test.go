package webhook

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// fakeDNS returns a resolver answering from records (fully qualified,
// lower-case names) through an in-memory DNS server, so tests can make a
// name resolve anywhere without a network. Unknown names get NXDOMAIN.
func fakeDNS(t testing.TB, records map[string][]netip.Addr) *net.Resolver {
	d := &dnsServer{records: records}
	return d.resolver(t)
}

// dnsServer holds the records fakeDNS serves; set changes them between
// lookups, as a rebinding attacker's DNS server would.
type dnsServer struct {
	mu      sync.Mutex
	records map[string][]netip.Addr
}

func (d *dnsServer) set(name string, addrs ...netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[name] = addrs
}

func (d *dnsServer) resolver(t testing.TB) *net.Resolver {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		// A net.Pipe is not a PacketConn, so the resolver speaks DNS over
		// TCP framing: a two-byte length before each message.
		client, server := net.Pipe()
		wg.Go(func() {
			defer server.Close()
			for {
				var n uint16
				if binary.Read(server, binary.BigEndian, &n) != nil {
					return
				}
				q := make([]byte, n)
				if _, err := io.ReadFull(server, q); err != nil {
					return
				}
				resp := d.answer(q)
				if resp == nil {
					return
				}
				out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
				if _, err := server.Write(append(out, resp...)); err != nil {
					return
				}
			}
		})
		return client, nil
	}}
}

// answer builds the response to one query, or nil when it is malformed.
func (d *dnsServer) answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	// Question: labels up to a zero byte, then type and class.
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1 : i+3])
	question := q[12 : i+5]
	name := strings.ToLower(strings.Join(labels, ".")) + "."

	d.mu.Lock()
	addrs, known := d.records[name]
	d.mu.Unlock()

	var answers [][]byte
	for _, a := range addrs {
		var rtype uint16
		switch {
		case a.Is4() && qtype == 1:
			rtype = 1
		case a.Is6() && qtype == 28:
			rtype = 28
		default:
			continue
		}
		rr := []byte{0xc0, 12} // pointer to the question's name
		rr = binary.BigEndian.AppendUint16(rr, rtype)
		rr = binary.BigEndian.AppendUint16(rr, 1) // IN
		rr = binary.BigEndian.AppendUint32(rr, 1) // TTL
		rr = binary.BigEndian.AppendUint16(rr, uint16(a.BitLen()/8))
		answers = append(answers, append(rr, a.AsSlice()...))
	}
	flags := uint16(0x8180) // response, recursion desired and available
	if !known {
		flags |= 3 // NXDOMAIN
	}
	resp := append([]byte{}, q[0:2]...)
	resp = binary.BigEndian.AppendUint16(resp, flags)
	resp = binary.BigEndian.AppendUint16(resp, 1)
	resp = binary.BigEndian.AppendUint16(resp, uint16(len(answers)))
	resp = binary.BigEndian.AppendUint16(resp, 0)
	resp = binary.BigEndian.AppendUint16(resp, 0)
	resp = append(resp, question...)
	for _, rr := range answers {
		resp = append(resp, rr...)
	}
	return resp
}
