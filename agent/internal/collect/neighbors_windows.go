//go:build windows

package collect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/windows"
)

// GetIpNetTable2 (Windows Vista and later) is not wrapped by
// golang.org/x/sys/windows; FreeMibTable is.
var procGetIPNetTable2 = windows.NewLazySystemDLL("iphlpapi.dll").NewProc("GetIpNetTable2")

// maxIPNetRows bounds the table size believed from NumEntries, so that a
// corrupt count cannot make the slice below reach past the table.
const maxIPNetRows = 1 << 20

func readNeighbors(_ context.Context) ([]Neighbor, error) {
	if err := procGetIPNetTable2.Find(); err != nil {
		return nil, fmt.Errorf("%w on this Windows version: %w", ErrNeighborsUnsupported, err)
	}
	var table *byte // PMIB_IPNET_TABLE2, allocated by Windows
	// AF_UNSPEC asks for the IPv4 (ARP) and IPv6 (NDP) entries at once.
	r, _, _ := procGetIPNetTable2.Call(uintptr(windows.AF_UNSPEC), uintptr(unsafe.Pointer(&table)))
	switch errno := windows.Errno(r); {
	case errno == windows.ERROR_NOT_FOUND:
		return []Neighbor{}, nil // an empty table
	case errno != 0:
		return nil, fmt.Errorf("neighbors: GetIpNetTable2: %w", errno)
	case table == nil:
		return nil, errors.New("neighbors: GetIpNetTable2 returned no table")
	}
	defer windows.FreeMibTable(unsafe.Pointer(table))

	n := *(*uint32)(unsafe.Pointer(table))
	if n > maxIPNetRows {
		return nil, fmt.Errorf("neighbors: GetIpNetTable2 reports %d rows", n)
	}
	size := mibIPNetTableRows + int(n)*mibIPNetRowSize
	entries, err := parseIPNetTable2(unsafe.Slice(table, size))
	if err != nil {
		return nil, fmt.Errorf("neighbors: %w", err)
	}
	return tidyNeighbors(entries, net.InterfaceByIndex), nil
}
