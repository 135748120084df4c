//go:build !linux && !darwin && !windows

package collect

import (
	"context"
	"fmt"
	"runtime"
)

func readNeighbors(_ context.Context) ([]Neighbor, error) {
	return nil, fmt.Errorf("%w on %s", ErrNeighborsUnsupported, runtime.GOOS)
}
