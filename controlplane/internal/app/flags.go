package app

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// envName is the environment variable that stands in for a flag:
// --database-url reads EDGEWARD_DATABASE_URL.
func envName(flagName string) string {
	return "EDGEWARD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args into fs after taking defaults from EDGEWARD_*
// variables, so a command line flag wins over the environment, which wins
// over the built-in default.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s: %w", envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	return fs.Parse(args)
}

// newFlagSet makes a flag set whose usage lists the environment variables.
func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: edgeward-controlplane %s [flags]\n\n%s\n\nFlags (each also read from the EDGEWARD_* variable shown):\n", name, summary)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(stderr, "  --%s  [%s]\n      %s%s\n", f.Name, envName(f.Name), f.Usage, def)
		})
	}
	return fs
}

// logFlags are the logging flags every command has.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet, defaultFormat string) {
	fs.StringVar(&l.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", defaultFormat, "json or text")
}

// parse parses the flag set (see parseFlags) and builds the logger.
func (l *logFlags) parse(fs *flag.FlagSet, args []string, w io.Writer) (*slog.Logger, error) {
	if err := parseFlags(fs, args); err != nil {
		return nil, usageErr(err)
	}
	return l.logger(w)
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", l.format)
}

// dbFlags are the database flags of the operator commands.
type dbFlags struct {
	url      string
	adminURL string
	fs       *flag.FlagSet
}

func (d *dbFlags) register(fs *flag.FlagSet) {
	d.fs = fs
	fs.StringVar(&d.url, "database-url", "", "PostgreSQL URL the server connects with, as the runtime role edgeward_app")
	fs.StringVar(&d.adminURL, "admin-database-url", "", "PostgreSQL URL of the owner role, for migrations and operator commands (default: --database-url)")
}

// admin is the URL every operator command uses: --admin-database-url,
// else --database-url, else their variables in the same order. A flag
// on the command line wins over both variables, as every flag wins over
// the environment.
func (d *dbFlags) admin() (string, error) {
	onCommandLine := map[string]bool{}
	if d.fs != nil {
		d.fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	}
	switch {
	case onCommandLine["admin-database-url"] && d.adminURL != "":
		return d.adminURL, nil
	case onCommandLine["database-url"] && d.url != "":
		return d.url, nil
	case d.adminURL != "":
		return d.adminURL, nil
	case d.url != "":
		return d.url, nil
	}
	return "", fmt.Errorf("no database: set --admin-database-url (%s) or --database-url (%s); after `make demo`, `. .edgeward/demo.env` sets them",
		envName("admin-database-url"), envName("database-url"))
}
