//go:build unix

// Package pgcluster runs a private, throwaway PostgreSQL cluster with the
// machine's own initdb and pg_ctl, for `edgeward-controlplane dev` and for
// tests when no DATABASE_URL is given.
//
// initdb refuses to run as root, so when the caller is root the cluster's
// files belong to, and its server runs as, an unprivileged user (postgres if
// it exists, else nobody).
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SuperUser is the bootstrap superuser initdb creates.
const SuperUser = "postgres"

// Options tune a cluster.
type Options struct {
	// Durable keeps fsync on. Test clusters turn it off: they are thrown away.
	Durable bool
}

// Cluster is a running private cluster.
type Cluster struct {
	Dir  string // holds data/, postgres.log and the lock file
	Port int

	bin  string
	cred *syscall.Credential
}

// ErrNoBinaries means initdb and pg_ctl were not found.
var ErrNoBinaries = errors.New(`PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under /usr/lib/postgresql/*/bin.
Install them, then run the command again:
  Debian/Ubuntu:    sudo apt-get install -y postgresql
  Fedora/RHEL:      sudo dnf install -y postgresql-server
  macOS (Homebrew): brew install postgresql@16 && export PATH="$(brew --prefix postgresql@16)/bin:$PATH"
Or point DATABASE_URL at an existing PostgreSQL server (14 or newer).`)

// binGlobs are where distributions put server binaries that are not on PATH.
var binGlobs = []string{
	"/usr/lib/postgresql/*/bin",
	"/usr/pgsql-*/bin",
	"/opt/homebrew/opt/postgresql@*/bin",
	"/usr/local/opt/postgresql@*/bin",
}

// FindBinDir returns the directory holding initdb and pg_ctl.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	var candidates []string
	for _, pattern := range binGlobs {
		m, _ := filepath.Glob(pattern)
		candidates = append(candidates, m...)
	}
	// Newest major version first.
	sort.Slice(candidates, func(i, j int) bool { return majorOf(candidates[i]) > majorOf(candidates[j]) })
	for _, dir := range candidates {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
				return dir, nil
			}
		}
	}
	return "", ErrNoBinaries
}

// majorOf reads the major version from the directory above bin:
// /usr/lib/postgresql/15/bin, /usr/pgsql-15/bin, .../postgresql@16/bin.
func majorOf(binDir string) int {
	versioned := filepath.Base(filepath.Dir(binDir))
	for _, part := range strings.FieldsFunc(versioned, func(r rune) bool { return r < '0' || r > '9' }) {
		if n, err := strconv.Atoi(part); err == nil {
			return n
		}
	}
	return 0
}

// Ensure makes sure a cluster lives in dir and is running: it creates it on
// first use and starts it when stopped. Concurrent callers (parallel test
// packages) serialize on a lock file and share one server.
func Ensure(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		if c.cred, err = unprivilegedUser(); err != nil {
			return nil, err
		}
		if err := checkReachable(dir, c.cred); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := c.chown(dir); err != nil {
		return nil, err
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	if _, err := os.Stat(filepath.Join(c.dataDir(), "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx, opts); err != nil {
			return nil, err
		}
	}
	if port, ok := c.runningPort(ctx); ok {
		c.Port = port
		return c, nil
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// StopIn stops the cluster in dir if one is running there, and reports
// whether it did. A missing directory or a stopped cluster is no error.
func StopIn(ctx context.Context, dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		return false, nil
	}
	bin, err := FindBinDir()
	if err != nil {
		return false, err
	}
	c := &Cluster{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		if c.cred, err = unprivilegedUser(); err != nil {
			return false, err
		}
	}
	if _, running := c.runningPort(ctx); !running {
		return false, nil
	}
	if err := c.Stop(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// URL is a connection string for database db as the superuser.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", SuperUser, c.Port, db)
}

// Stop shuts the server down (fast mode: open sessions are ended).
func (c *Cluster) Stop(ctx context.Context) error {
	_, err := c.run(ctx, filepath.Join(c.bin, "pg_ctl"), "stop", "-D", c.dataDir(), "-m", "fast", "-w", "-t", "60")
	return err
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "data") }

func (c *Cluster) initdb(ctx context.Context, opts Options) error {
	// A half-made data directory from an interrupted initdb cannot be reused.
	if err := os.RemoveAll(c.dataDir()); err != nil {
		return err
	}
	args := []string{"-D", c.dataDir(), "-U", SuperUser, "-A", "trust", "-E", "UTF8", "--locale=C"}
	if !opts.Durable {
		args = append(args, "--no-sync")
	}
	if out, err := c.run(ctx, filepath.Join(c.bin, "initdb"), args...); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	conf := []string{
		"# Written by edgeward's pgcluster: a private cluster reachable on loopback only.",
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = ''",
		"max_connections = 200",
		"log_min_messages = warning",
	}
	if !opts.Durable {
		conf = append(conf, "fsync = off", "synchronous_commit = off", "full_page_writes = off")
	}
	f, err := os.OpenFile(filepath.Join(c.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n" + strings.Join(conf, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// runningPort reports the port of a server already running on this data dir.
func (c *Cluster) runningPort(ctx context.Context) (int, bool) {
	if _, err := c.run(ctx, filepath.Join(c.bin, "pg_ctl"), "status", "-D", c.dataDir()); err != nil {
		return 0, false
	}
	pid, err := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	// Line 4 of postmaster.pid is the port; the last line says "ready" once the
	// server accepts connections.
	lines := strings.Split(strings.TrimSpace(string(pid)), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil {
		return 0, false
	}
	return port, strings.TrimSpace(lines[len(lines)-1]) == "ready"
}

func (c *Cluster) start(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	logPath := filepath.Join(c.Dir, "postgres.log")
	out, err := c.run(ctx, filepath.Join(c.bin, "pg_ctl"), "start", "-D", c.dataDir(), "-w", "-t", "60",
		"-l", logPath, "-o", "-p "+strconv.Itoa(port))
	if err != nil {
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("start postgres: %w\n%s\n%s", err, out, tail)
	}
	c.Port = port
	return nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl leaves the server running in the background with our output
	// pipes; WaitDelay stops Wait from waiting for the server to close them.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	return out.Bytes(), err
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("hand %s to the unprivileged postgres user: %w", path, err)
	}
	return nil
}

// unprivilegedUser is the user a root caller runs the cluster as.
func unprivilegedUser() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root, and neither a postgres nor a nobody user exists to run the private PostgreSQL cluster as (initdb refuses root)")
}

// checkReachable makes sure the unprivileged user can reach dir: every
// existing ancestor must be searchable by others.
func checkReachable(dir string, cred *syscall.Credential) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil {
			sys, _ := st.Sys().(*syscall.Stat_t)
			ownedByUser := sys != nil && sys.Uid == cred.Uid
			if st.Mode().Perm()&0o001 == 0 && !ownedByUser {
				return fmt.Errorf("the private PostgreSQL cluster runs as uid %d (initdb refuses root), which cannot enter %s; use a directory whose parents are world-searchable (chmod o+x %s)", cred.Uid, p, p)
			}
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

// DefaultTestDir is where tests keep their shared throwaway cluster: under
// the system temp directory (reachable by an unprivileged user when running
// as root) and distinct per user and per checkout.
func DefaultTestDir(checkout string) string {
	h := uint32(2166136261)
	for i := 0; i < len(checkout); i++ {
		h = (h ^ uint32(checkout[i])) * 16777619
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("edgeward-testpg-%d-%08x", os.Geteuid(), h))
}
