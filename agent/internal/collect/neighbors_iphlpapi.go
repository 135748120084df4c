package collect

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// The layout of the MIB_IPNET_TABLE2 that Windows' GetIpNetTable2 returns,
// read by offset rather than through a Go struct so that it does not depend
// on Go's alignment rules (which differ from MSVC's for 8-byte fields on
// 32-bit Windows), and so that it can be tested on any platform.
//
// From netioapi.h and
// https://learn.microsoft.com/en-us/windows/win32/api/netioapi/ns-netioapi-mib_ipnet_row2
// (field, C type: offset, size in bytes):
//
//	MIB_IPNET_TABLE2
//	  NumEntries             ULONG                      0   4
//	  (padding to the rows' 8-byte alignment)           4   4
//	  Table[NumEntries]      MIB_IPNET_ROW2             8   88 each
//
//	MIB_IPNET_ROW2 (8-byte aligned, because of NET_LUID)
//	  Address                SOCKADDR_INET              0  28
//	    si_family            ADDRESS_FAMILY (USHORT)    0   2
//	    Ipv4.sin_addr        IN_ADDR                    4   4
//	    Ipv6.sin6_addr       IN6_ADDR                   8  16
//	  InterfaceIndex         NET_IFINDEX (ULONG)       28   4
//	  InterfaceLuid          NET_LUID (ULONG64)        32   8
//	  PhysicalAddress        UCHAR[32]                 40  32  (IF_MAX_PHYS_ADDRESS_LENGTH)
//	  PhysicalAddressLength  ULONG                     72   4
//	  State                  NL_NEIGHBOR_STATE (enum)  76   4
//	  Flags                  UCHAR (IsRouter, IsUnreachable bits)  80  1
//	  ReachabilityTime       ULONG (union)             84   4
//	  (size, rounded to the 8-byte alignment)              88
//
// Every Windows architecture Go supports is little-endian.
const (
	mibIPNetTableRows = 8
	mibIPNetRowSize   = 88

	mibRowAddressFamily = 0
	mibRowIPv4          = 4
	mibRowIPv6          = 8
	mibRowIfIndex       = 28
	mibRowPhysAddr      = 40
	mibRowPhysAddrLen   = 72
	mibRowState         = 76

	mibPhysAddrMax = 32

	// Address families as Windows numbers them (ws2def.h).
	winAFInet  = 2
	winAFInet6 = 23
)

// nlNeighborStates names NL_NEIGHBOR_STATE (nldef.h) values, in order from
// NlnsUnreachable (0) to NlnsPermanent (6).
var nlNeighborStates = [...]string{"unreachable", "incomplete", "probe", "delay", "stale", "reachable", "permanent"}

// parseIPNetTable2 parses a MIB_IPNET_TABLE2 laid out as above. b must
// hold the whole table; the MACs it returns are copies, so b may be freed
// afterwards.
func parseIPNetTable2(b []byte) ([]neighborEntry, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("neighbour table of %d bytes", len(b))
	}
	le := binary.LittleEndian
	n := int(le.Uint32(b[0:4]))
	if n == 0 {
		return nil, nil
	}
	if len(b) < mibIPNetTableRows || n > (len(b)-mibIPNetTableRows)/mibIPNetRowSize {
		return nil, fmt.Errorf("neighbour table of %d bytes cannot hold %d rows", len(b), n)
	}
	entries := make([]neighborEntry, 0, n)
	for i := range n {
		row := b[mibIPNetTableRows+i*mibIPNetRowSize:][:mibIPNetRowSize]
		var e neighborEntry
		switch le.Uint16(row[mibRowAddressFamily:]) {
		case winAFInet:
			e.IP = netip.AddrFrom4([4]byte(row[mibRowIPv4 : mibRowIPv4+4]))
		case winAFInet6:
			e.IP = netip.AddrFrom16([16]byte(row[mibRowIPv6 : mibRowIPv6+16]))
		default:
			continue
		}
		e.ifindex = int(le.Uint32(row[mibRowIfIndex:]))
		if e.ifindex == 0 {
			continue
		}
		if l := int(le.Uint32(row[mibRowPhysAddrLen:])); l > 0 && l <= mibPhysAddrMax {
			e.MAC = net.HardwareAddr(bytes.Clone(row[mibRowPhysAddr : mibRowPhysAddr+l]))
		}
		if s := le.Uint32(row[mibRowState:]); int(s) < len(nlNeighborStates) {
			e.State = nlNeighborStates[s]
		} else {
			e.State = fmt.Sprintf("%d", s)
		}
		entries = append(entries, e)
	}
	return entries, nil
}
