//go:build !unix

// Package pgcluster runs a private PostgreSQL cluster; only on Unix-like
// systems. Elsewhere, point DATABASE_URL at a server.
package pgcluster

import (
	"context"
	"errors"
)

// SuperUser is the bootstrap superuser initdb creates.
const SuperUser = "postgres"

// Options tune a cluster.
type Options struct{ Durable bool }

// Cluster is a running private cluster.
type Cluster struct {
	Dir  string
	Port int
}

// ErrNoBinaries means a private cluster cannot be run here.
var ErrNoBinaries = errors.New("a private PostgreSQL cluster needs a Unix-like system; set DATABASE_URL to an existing PostgreSQL server")

// Ensure always fails on this system.
func Ensure(context.Context, string, Options) (*Cluster, error) { return nil, ErrNoBinaries }

// URL is unused on this system.
func (c *Cluster) URL(string) string { return "" }

// Stop is unused on this system.
func (c *Cluster) Stop(context.Context) error { return nil }

// DefaultTestDir is unused on this system.
func DefaultTestDir(string) string { return "" }
