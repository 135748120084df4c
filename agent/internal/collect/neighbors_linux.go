//go:build linux

package collect

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procNetARP is the kernel's IPv4 neighbour table as text, readable where
// netlink sockets are not allowed.
const procNetARP = "/proc/net/arp"

// netlinkTimeout bounds a neighbour dump when ctx has no earlier deadline:
// the kernel answers a dump at once, so a silent socket means it never will.
const netlinkTimeout = 10 * time.Second

func readNeighbors(ctx context.Context) ([]Neighbor, error) {
	entries, err := dumpNeighbors(ctx)
	if err == nil {
		return tidyNeighbors(entries, net.InterfaceByIndex), nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, fmt.Errorf("neighbors: %w", ctxErr)
	}
	f, arpErr := os.Open(procNetARP)
	if arpErr == nil {
		defer f.Close()
		entries, arpErr = parseProcNetARP(f)
	}
	if arpErr != nil {
		return nil, fmt.Errorf("neighbors: netlink: %w; %s: %w", err, procNetARP, arpErr)
	}
	return tidyNeighbors(entries, net.InterfaceByIndex), nil
}

// dumpNeighbors asks the kernel for its IPv4 and IPv6 neighbour tables over
// one rtnetlink socket.
func dumpNeighbors(ctx context.Context) ([]neighborEntry, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// A non-blocking descriptor wrapped in an os.File is served by the
	// runtime poller, which gives reads a deadline that ctx can pull in.
	f := os.NewFile(uintptr(fd), "rtnetlink")
	defer f.Close()
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("bind", err)
	}
	deadline := time.Now().Add(netlinkTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := f.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var all []neighborEntry
	for i, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		entries, err := dumpFamily(rc, family, uint32(i+1))
		if errors.Is(err, unix.EAFNOSUPPORT) && family == unix.AF_INET6 {
			// A kernel booted with IPv6 disabled has no NDP table.
			continue
		}
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, ctxErr
			}
			return nil, err
		}
		all = append(all, entries...)
	}
	return all, nil
}

// dumpFamily sends one RTM_GETNEIGH dump request and reads its answer up to
// NLMSG_DONE.
func dumpFamily(rc syscall.RawConn, family uint8, seq uint32) ([]neighborEntry, error) {
	req := neighborDumpRequest(family, seq)
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	var opErr error
	err := rc.Write(func(fd uintptr) bool {
		opErr = unix.Sendto(int(fd), req, 0, kernel)
		return opErr != unix.EAGAIN
	})
	if err = errors.Join(err, opErr); err != nil {
		return nil, fmt.Errorf("send neighbour dump request: %w", err)
	}

	// A dump arrives in datagrams of at most 32 KiB each (the kernel's
	// largest netlink dump allocation); the buffer leaves room to spare.
	buf := make([]byte, 64<<10)
	var entries []neighborEntry
	for {
		var n int
		var from unix.Sockaddr
		err := rc.Read(func(fd uintptr) bool {
			// MSG_TRUNC makes the kernel report the datagram's full length,
			// so a datagram larger than buf is noticed rather than cut.
			n, from, opErr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			return opErr != unix.EAGAIN
		})
		if err = errors.Join(err, opErr); err != nil {
			return nil, fmt.Errorf("receive neighbour dump: %w", err)
		}
		if n > len(buf) {
			return nil, fmt.Errorf("receive neighbour dump: datagram of %d bytes exceeds the %d byte buffer", n, len(buf))
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		got, done, err := parseNeighborDump(buf[:n], seq)
		if err != nil {
			return nil, err
		}
		entries = append(entries, got...)
		if done {
			return entries, nil
		}
	}
}

// neighborDumpRequest is an RTM_GETNEIGH dump request for one address
// family: a netlink header followed by a struct ndmsg naming the family.
func neighborDumpRequest(family uint8, seq uint32) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+unix.SizeofNdMsg)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:4], uint32(len(b)))
	ne.PutUint16(b[4:6], unix.RTM_GETNEIGH)
	ne.PutUint16(b[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:12], seq)
	// nlmsg_pid 0: the kernel fills in this socket's port id.
	b[unix.SizeofNlMsghdr] = family // ndm_family; the rest of ndmsg is zero
	return b
}

// parseNeighborDump parses one datagram of an RTM_GETNEIGH dump. It returns
// the neighbour entries of the datagram's RTM_NEWNEIGH messages, and done
// when the datagram ends the dump. Messages of other sequence numbers are
// ignored; an NLMSG_ERROR for this dump is returned as its errno.
//
// A dump that the kernel marks as interrupted (NLM_F_DUMP_INTR, the table
// changed while it was being read) is used as it is: the table changes all
// the time, and the next read catches up.
func parseNeighborDump(b []byte, seq uint32) (entries []neighborEntry, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		msgLen := int(ne.Uint32(b[0:4]))
		msgType := ne.Uint16(b[4:6])
		msgSeq := ne.Uint32(b[8:12])
		if msgLen < unix.SizeofNlMsghdr || msgLen > len(b) {
			return nil, false, fmt.Errorf("neighbour dump: netlink message of %d bytes in %d", msgLen, len(b))
		}
		body := b[unix.SizeofNlMsghdr:msgLen]
		b = b[min(nlmAlign(msgLen), len(b)):]
		if msgSeq != seq {
			continue
		}
		switch msgType {
		case unix.NLMSG_DONE:
			// Since Linux 4.x a dump that fails part way says so here.
			if len(body) >= 4 {
				if errno := -int32(ne.Uint32(body[0:4])); errno > 0 {
					return nil, false, fmt.Errorf("neighbour dump: %w", unix.Errno(errno))
				}
			}
			return entries, true, nil
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return nil, false, errors.New("neighbour dump: short netlink error message")
			}
			if errno := -int32(ne.Uint32(body[0:4])); errno > 0 {
				return nil, false, fmt.Errorf("neighbour dump: %w", unix.Errno(errno))
			}
			// An errno of 0 acknowledges a request; it carries no entry.
		case unix.RTM_NEWNEIGH:
			e, ok, err := parseNdMsg(body)
			if err != nil {
				return nil, false, err
			}
			if ok {
				entries = append(entries, e)
			}
		}
	}
	if len(b) != 0 {
		return nil, false, fmt.Errorf("neighbour dump: %d trailing bytes", len(b))
	}
	return entries, false, nil
}

// parseNdMsg parses the body of an RTM_NEWNEIGH message: a struct ndmsg
//
//	u8 ndm_family, u8 pad, u16 pad, s32 ndm_ifindex, u16 ndm_state, u8 ndm_flags, u8 ndm_type
//
// followed by route attributes, of which NDA_DST and NDA_LLADDR are used.
// ok is false for an entry of another family or without a destination; an
// entry without a link-layer address is returned with a nil MAC and left
// out later with the other unusable ones.
func parseNdMsg(b []byte) (e neighborEntry, ok bool, err error) {
	if len(b) < unix.SizeofNdMsg {
		return e, false, fmt.Errorf("neighbour dump: ndmsg of %d bytes", len(b))
	}
	ne := binary.NativeEndian
	family := b[0]
	e.ifindex = int(int32(ne.Uint32(b[4:8])))
	state := ne.Uint16(b[8:10])
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return e, false, nil
	}
	e.State = nudStateName(state)

	attrs := b[unix.SizeofNdMsg:]
	for len(attrs) >= unix.SizeofRtAttr {
		attrLen := int(ne.Uint16(attrs[0:2]))
		attrType := ne.Uint16(attrs[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if attrLen < unix.SizeofRtAttr || attrLen > len(attrs) {
			return e, false, fmt.Errorf("neighbour dump: attribute of %d bytes in %d", attrLen, len(attrs))
		}
		data := attrs[unix.SizeofRtAttr:attrLen]
		attrs = attrs[min(nlmAlign(attrLen), len(attrs)):]
		switch attrType {
		case unix.NDA_DST:
			ip, valid := netip.AddrFromSlice(data)
			if !valid || (family == unix.AF_INET) != ip.Is4() {
				return e, false, fmt.Errorf("neighbour dump: destination of %d bytes for family %d", len(data), family)
			}
			e.IP = ip
		case unix.NDA_LLADDR:
			e.MAC = net.HardwareAddr(bytes.Clone(data))
		}
	}
	if e.ifindex <= 0 || !e.IP.IsValid() {
		return e, false, nil
	}
	return e, true, nil
}

// nlmAlign rounds n up to netlink's 4-byte alignment of messages and
// attributes.
func nlmAlign(n int) int { return (n + 3) &^ 3 }

// nudStateName names a neighbour entry's NUD_* state the way `ip neigh`
// does, in lowercase. The states are single bits in practice; anything else
// is shown in hex rather than guessed at.
func nudStateName(state uint16) string {
	switch state {
	case unix.NUD_NONE:
		return "none"
	case unix.NUD_INCOMPLETE:
		return "incomplete"
	case unix.NUD_REACHABLE:
		return "reachable"
	case unix.NUD_STALE:
		return "stale"
	case unix.NUD_DELAY:
		return "delay"
	case unix.NUD_PROBE:
		return "probe"
	case unix.NUD_FAILED:
		return "failed"
	case unix.NUD_NOARP:
		return "noarp"
	case unix.NUD_PERMANENT:
		return "permanent"
	}
	return fmt.Sprintf("0x%02x", state)
}

// ARP entry flags of /proc/net/arp (ATF_* in <net/if_arp.h>).
const (
	atfComplete  = 0x02
	atfPermanent = 0x04
)

// parseProcNetARP parses the kernel's /proc/net/arp table:
//
//	IP address       HW type     Flags       HW address            Mask     Device
//	192.168.1.1      0x1         0x2         00:11:22:33:44:55     *        eth0
//
// Only complete entries are returned. The table has no NUD state: entries
// are "permanent" when the kernel flags them so, and "" otherwise.
func parseProcNetARP(r io.Reader) ([]neighborEntry, error) {
	sc := bufio.NewScanner(r)
	var entries []neighborEntry
	for line := 0; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if line == 0 || len(fields) == 0 {
			continue // the header
		}
		if len(fields) < 6 {
			return nil, fmt.Errorf("line %d: %d fields, want 6", line+1, len(fields))
		}
		ip, err := netip.ParseAddr(fields[0])
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("line %d: address %q is not IPv4", line+1, fields[0])
		}
		flags, err := strconv.ParseUint(fields[2], 0, 32)
		if err != nil {
			return nil, fmt.Errorf("line %d: flags %q: %w", line+1, fields[2], err)
		}
		if flags&atfComplete == 0 {
			continue
		}
		mac, err := net.ParseMAC(fields[3])
		if err != nil {
			continue // not an Ethernet-style address (tunnels, InfiniBand)
		}
		e := neighborEntry{Neighbor: Neighbor{IP: ip, MAC: mac, Interface: fields[5]}}
		if flags&atfPermanent != 0 {
			e.State = "permanent"
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return entries, nil
}
