package jsoncheck

import (
	"strings"
	"testing"
)

func BenchmarkCheckFlat1MB(b *testing.B) {
	body := []byte("[" + strings.Repeat("1,", 1<<19-1) + "1]")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := Check(body, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckObjects1MB(b *testing.B) {
	body := []byte("[" + strings.Repeat(`{"name":"abcdef","n":12345},`, 1<<15) + "{}]")
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := Check(body, 0); err != nil {
			b.Fatal(err)
		}
	}
}
