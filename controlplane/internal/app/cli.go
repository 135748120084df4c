package app

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/agents"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/auth"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhook"
	"github.com/edgeward/edgeward/controlplane/internal/httpx"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/secrets"
	"github.com/edgeward/edgeward/controlplane/internal/tenants"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// command is one subcommand of edgeward-controlplane.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, out, errOut io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "Serve the REST API, agent RPC, health and metrics on one TLS listener.", runServe},
		{"migrate", "Apply the embedded migrations as the owner role and create the runtime role.", runMigrate},
		{"bootstrap", "Create a tenant and its first tenant_admin API token (printed once).", runBootstrap},
		{"tenant", "Manage tenants: tenant create --name NAME | tenant list.", runTenant},
		{"token", "Issue API tokens: token create --tenant ID|NAME --role ROLE --name NAME.", runToken},
		{"audit", "Check audit trails: audit verify [--tenant ID|NAME [--expect-head SEQ:HASH]].", runAudit},
		{"dev", "Run a local control plane on a private PostgreSQL under ./.edgeward (make demo).", runDev},
		{"version", "Print the version.", func(_ context.Context, _ []string, out, _ io.Writer) error {
			_, err := fmt.Fprintln(out, "edgeward-controlplane", Version)
			return err
		}},
	}
}

// errUsage marks an error already explained by a usage message.
var errUsage = errors.New("usage")

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usage := func() {
		fmt.Fprintln(stderr, "Usage: edgeward-controlplane <command> [flags]\n\nCommands:")
		for _, c := range commands() {
			fmt.Fprintf(stderr, "  %-10s %s\n", c.name, c.summary)
		}
		fmt.Fprintln(stderr, "\nRun edgeward-controlplane <command> -h for a command's flags.")
	}
	if len(args) == 2 && args[0] == "help" {
		args = []string{args[1], "-h"} // help CMD is CMD -h
	}
	if len(args) == 0 || isHelp(args[0]) {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			if err != errUsage {
				fmt.Fprintln(stderr, "edgeward-controlplane:", strings.TrimSuffix(err.Error(), ": "+errUsage.Error()))
			}
			return 2
		case errors.Is(err, errVerifyFailed):
			return 1
		}
		fmt.Fprintln(stderr, "edgeward-controlplane:", describe(err))
		return 1
	}
	fmt.Fprintf(stderr, "edgeward-controlplane: unknown command %q\n\n", args[0])
	usage()
	return 2
}

// serveFlags are the flags of serve (and, in part, dev).
type serveFlags struct {
	listen          string
	dataDir         string
	publicHosts     string
	tlsCert         string
	tlsKey          string
	maxBody         int64
	trustedProxies  string
	shutdownTimeout time.Duration
	agentCertLife   time.Duration
	agentInterval   time.Duration
	deliveries      deliveryFlags
}

// deliveryFlags are the webhook delivery settings of a deployment.
type deliveryFlags struct {
	secretsKeys  string
	allowHosts   string
	caFile       string
	timeout      time.Duration
	schedule     string
	disableAfter time.Duration
	workers      int
	rescueAfter  time.Duration
}

func (d *deliveryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.secretsKeys, "secrets-key", "", "comma-separated key references (env:NAME or file:PATH, base64 of 32 bytes) that seal stored credentials; the first seals, all open. Default: file:<data-dir>/"+secrets.DefaultKeyFile+", created on first start")
	fs.StringVar(&d.allowHosts, "webhook-allow-hosts", "", "comma-separated host names, addresses or CIDRs webhooks may reach although they are loopback, private or link-local (on-premises receivers)")
	fs.StringVar(&d.caFile, "webhook-ca-file", "", "PEM file of extra CAs that webhook receivers' certificates may chain to (besides the system's)")
	fs.DurationVar(&d.timeout, "webhook-timeout", webhook.DefaultTimeout, "how long a receiver has to answer an attempt")
	fs.StringVar(&d.schedule, "webhook-retry-schedule", formatSchedule(deliveries.DefaultSchedule), "comma-separated delays before each attempt (the first is normally 0s); jittered by ±10%")
	fs.DurationVar(&d.disableAfter, "webhook-disable-after", deliveries.DefaultDisableAfter, "a destination whose every attempt failed this long is disabled")
	fs.IntVar(&d.workers, "webhook-workers", deliveries.DefaultWorkers, "attempts this replica runs at once")
	fs.DurationVar(&d.rescueAfter, "job-rescue-after", 0, "how long a background job may run before it is taken for lost (its replica died) and run again (default: the job timeout plus one minute)")
}

func (d *deliveryFlags) config() (DeliverySettings, error) {
	out := DeliverySettings{
		SecretsKeys: splitList(d.secretsKeys), AllowHosts: splitList(d.allowHosts), CAFile: d.caFile,
		Timeout: d.timeout, DisableAfter: d.disableAfter, Workers: d.workers, RescueAfter: d.rescueAfter,
	}
	for _, v := range splitList(d.schedule) {
		delay, err := time.ParseDuration(v)
		if err != nil || delay < 0 {
			return out, fmt.Errorf("--webhook-retry-schedule: %q is not a duration such as 5s or 30m", v)
		}
		out.Schedule = append(out.Schedule, delay)
	}
	if len(out.Schedule) == 0 {
		return out, errors.New("--webhook-retry-schedule: at least one delay (the first attempt's, normally 0s)")
	}
	if d.workers < 1 {
		return out, errors.New("--webhook-workers must be at least 1")
	}
	if d.timeout <= 0 {
		return out, errors.New("--webhook-timeout must be positive")
	}
	return out, nil
}

func formatSchedule(s []time.Duration) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

func (s *serveFlags) register(fs *flag.FlagSet, defaultDataDir string) {
	fs.StringVar(&s.listen, "listen", "127.0.0.1:8443", "address of the TLS listener")
	fs.StringVar(&s.dataDir, "data-dir", defaultDataDir, "directory of the control plane's CA (ca.crt, ca.key)")
	fs.StringVar(&s.publicHosts, "public-host", "", "comma-separated extra names and addresses for the server certificate")
	fs.StringVar(&s.tlsCert, "tls-cert", "", "server certificate file (PEM); default: issued by the control plane's CA")
	fs.StringVar(&s.tlsKey, "tls-key", "", "server key file (PEM), with --tls-cert")
	fs.Int64Var(&s.maxBody, "max-body-bytes", httpx.DefaultMaxBodyBytes, "largest request body accepted")
	fs.StringVar(&s.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed")
	fs.DurationVar(&s.shutdownTimeout, "shutdown-timeout", 20*time.Second, "how long requests in flight may finish after SIGTERM")
	fs.DurationVar(&s.agentCertLife, "agent-cert-lifetime", agents.DefaultCertLifetime, "lifetime of agent client certificates (agents rotate at half of it)")
	fs.DurationVar(&s.agentInterval, "agent-heartbeat-interval", agents.DefaultHeartbeatInterval, "heartbeat interval given to newly enrolled agents")
	s.deliveries.register(fs)
}

func (s *serveFlags) config(databaseURL string) (ServeConfig, error) {
	cfg := ServeConfig{
		DatabaseURL:     databaseURL,
		Listen:          s.listen,
		DataDir:         s.dataDir,
		PublicHosts:     splitList(s.publicHosts),
		TLSCertFile:     s.tlsCert,
		TLSKeyFile:      s.tlsKey,
		MaxBodyBytes:    s.maxBody,
		ShutdownTimeout: s.shutdownTimeout,

		AgentCertLifetime:      s.agentCertLife,
		AgentHeartbeatInterval: s.agentInterval,
	}
	var err error
	if cfg.Deliveries, err = s.deliveries.config(); err != nil {
		return cfg, err
	}
	for _, c := range splitList(s.trustedProxies) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return cfg, fmt.Errorf("--trusted-proxies: %w", err)
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, p)
	}
	return cfg, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runServe(ctx context.Context, args []string, _, errOut io.Writer) error {
	fs := newFlagSet("serve", "Serve the REST API, agent RPC, /healthz, /readyz and /metrics on one TLS listener.\nConnects as the runtime role; SIGTERM shuts down gracefully.", errOut)
	var dbf dbFlags
	var sf serveFlags
	var lf logFlags
	fs.StringVar(&dbf.url, "database-url", "", "PostgreSQL URL of the runtime role edgeward_app")
	sf.register(fs, "data")
	lf.register(fs, "json")
	log, err := lf.parse(fs, args, errOut)
	if err != nil {
		return err
	}
	cfg, err := sf.config(dbf.url)
	if err != nil {
		return err
	}
	cfg.Logger = log
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	return serveUntilDone(ctx, s)
}

// serveUntilDone waits for a signal (ctx) or a listener failure, then shuts
// down gracefully.
func serveUntilDone(ctx context.Context, s *Server) error {
	select {
	case err := <-s.Wait():
		_ = s.Shutdown(ctx)
		return err
	case <-ctx.Done():
	}
	s.cfg.Logger.Info("shutting down", "reason", "signal")
	if err := s.Shutdown(ctx); err != nil {
		return err
	}
	s.cfg.Logger.Info("stopped")
	return nil
}

func runMigrate(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlagSet("migrate", "Apply the embedded migrations as the owner role (idempotent), and create or check\nthe runtime role edgeward_app that serve connects as.", errOut)
	var dbf dbFlags
	var lf logFlags
	var password string
	dbf.register(fs)
	fs.StringVar(&password, "runtime-password", "", "set this password on the runtime role edgeward_app")
	lf.register(fs, "text")
	log, err := lf.parse(fs, args, errOut)
	if err != nil {
		return err
	}
	url, err := dbf.admin()
	if err != nil {
		return err
	}
	if err := db.Migrate(ctx, url, db.MigrateOptions{RuntimePassword: password, Logger: log}); err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, "migrations applied; runtime role", db.RuntimeRole, "ready")
	return err
}

// operatorActor is the audit actor of operator commands: the OS user.
func operatorContext(ctx context.Context) context.Context {
	name := "operator"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return audit.WithActor(ctx, audit.Actor{Type: audit.ActorOperator, Name: name + "@" + host})
}

func runBootstrap(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlagSet("bootstrap", "Create a tenant with an \"admin\" principal and its first tenant_admin token.\nThe token is printed once; only its hash is stored.", errOut)
	var dbf dbFlags
	var name string
	var asJSON bool
	var ttl time.Duration
	dbf.register(fs)
	fs.StringVar(&name, "tenant", "", "name of the new tenant (required)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	fs.DurationVar(&ttl, "token-ttl", auth.DefaultTokenTTL, "lifetime of the admin token")
	if err := parseFlags(fs, args); err != nil {
		return usageErr(err)
	}
	if name == "" {
		fs.Usage()
		return fmt.Errorf("bootstrap: --tenant is required: %w", errUsage)
	}
	pool, err := openAdmin(ctx, &dbf)
	if err != nil {
		return err
	}
	defer pool.Close()
	b, err := tenants.Bootstrap(operatorContext(ctx), pool, name, ttl)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSONTo(out, map[string]any{
			"tenant_id": b.Tenant.ID, "tenant_name": b.Tenant.Name, "principal_id": b.Token.PrincipalID,
			"token_id": b.Token.ID, "token": b.Token.Secret, "role": b.Token.Role, "expires_at": b.Token.ExpiresAt,
		})
	}
	_, err = fmt.Fprintf(out, "Tenant %q created: %s\nAdmin token (shown once, store it now; expires %s):\n%s\n",
		b.Tenant.Name, b.Tenant.ID, b.Token.ExpiresAt.Format(time.RFC3339), b.Token.Secret)
	return err
}

func runTenant(ctx context.Context, args []string, out, errOut io.Writer) error {
	if err := pickSubcommand(ctx, "tenant", []string{"create", "list"}, args, errOut, runTenant); err != nil {
		return err
	}
	fs := newFlagSet("tenant "+args[0], "Create or list tenants (as the owner role, which sees every tenant).", errOut)
	var dbf dbFlags
	var name string
	var asJSON bool
	dbf.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if args[0] == "create" {
		fs.StringVar(&name, "name", "", "name of the new tenant (required)")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return usageErr(err)
	}
	if args[0] == "create" && name == "" {
		fs.Usage()
		return fmt.Errorf("tenant create: --name is required: %w", errUsage)
	}
	pool, err := openAdmin(ctx, &dbf)
	if err != nil {
		return err
	}
	defer pool.Close()
	if args[0] == "create" {
		t, err := tenants.Create(operatorContext(ctx), pool, name)
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSONTo(out, map[string]any{"tenant_id": t.ID, "name": t.Name, "created_at": t.CreatedAt})
		}
		_, err = fmt.Fprintf(out, "Tenant %q created: %s\n", t.Name, t.ID)
		return err
	}
	list, err := tenants.List(ctx, pool)
	if err != nil {
		return err
	}
	if asJSON {
		items := make([]map[string]any, 0, len(list))
		for _, t := range list {
			items = append(items, map[string]any{"tenant_id": t.ID, "name": t.Name, "created_at": t.CreatedAt})
		}
		return writeJSONTo(out, items)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT ID\tNAME\tCREATED")
	for _, t := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Name, t.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func runToken(ctx context.Context, args []string, out, errOut io.Writer) error {
	if err := pickSubcommand(ctx, "token", []string{"create"}, args, errOut, runToken); err != nil {
		return err
	}
	fs := newFlagSet("token create", "Issue an API token in a tenant for a new principal. The token is printed once.", errOut)
	var dbf dbFlags
	var tenant, role, name, principal string
	var expiresIn time.Duration
	var asJSON bool
	dbf.register(fs)
	fs.StringVar(&tenant, "tenant", "", "tenant id or name (required)")
	fs.StringVar(&role, "role", "", "role: "+strings.Join(caller.Roles, ", ")+" (required)")
	fs.StringVar(&name, "name", "", "what the token is for (required)")
	fs.StringVar(&principal, "principal", "", "existing principal id to bind the token to (default: a new principal named after the token)")
	fs.DurationVar(&expiresIn, "expires-in", auth.DefaultTokenTTL, "token lifetime, at most 8784h (366 days)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseFlags(fs, args[1:]); err != nil {
		return usageErr(err)
	}
	if tenant == "" || role == "" || name == "" {
		fs.Usage()
		return fmt.Errorf("token create: --tenant, --role and --name are required: %w", errUsage)
	}
	now := time.Now()
	spec := auth.TokenSpec{Name: name, Role: role, ExpiresAt: now.Add(expiresIn)}
	if principal != "" {
		pid, err := uuid.Parse(principal)
		if err != nil {
			return fmt.Errorf("token create: --principal must be a principal id: %w", err)
		}
		spec.PrincipalID = &pid
	}
	pool, err := openAdmin(ctx, &dbf)
	if err != nil {
		return err
	}
	defer pool.Close()
	t, err := findTenant(ctx, pool, tenant)
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	tenantID := t.ID
	var issued auth.IssuedToken
	ctx = operatorContext(ctx)
	err = db.InTenant(ctx, pool, tenantID, func(tx pgx.Tx) error {
		issued, err = auth.IssueToken(ctx, tx, tenantID, spec, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	if asJSON {
		return writeJSONTo(out, map[string]any{
			"tenant_id": tenantID, "token_id": issued.ID, "principal_id": issued.PrincipalID,
			"token": issued.Secret, "role": issued.Role, "expires_at": issued.ExpiresAt,
		})
	}
	_, err = fmt.Fprintf(out, "Token %q (%s, role %s, expires %s), shown once:\n%s\n",
		issued.Name, issued.ID, issued.Role, issued.ExpiresAt.Format(time.RFC3339), issued.Secret)
	return err
}

var errVerifyFailed = errors.New("audit chain broken")

func runAudit(ctx context.Context, args []string, out, errOut io.Writer) error {
	if err := pickSubcommand(ctx, "audit", []string{"verify"}, args, errOut, runAudit); err != nil {
		return err
	}
	fs := newFlagSet("audit verify", "Recompute tenants' audit hash chains and name the first broken link.\n"+
		"Exit status 1 when any chain is broken. Without --tenant every tenant is checked.\n"+
		"Each verified chain's head is printed as SEQ:HASH: keep it outside the database, and pass it\n"+
		"back later with --expect-head to detect a removed tail (the chain alone cannot show one).", errOut)
	var dbf dbFlags
	var tenant, expectHead string
	var asJSON bool
	dbf.register(fs)
	fs.StringVar(&tenant, "tenant", "", "tenant id or name (default: every tenant)")
	fs.StringVar(&expectHead, "expect-head", "", "a head recorded earlier, SEQ:HASH (HASH in hex): the event at SEQ must still exist with HASH (needs --tenant)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseFlags(fs, args[1:]); err != nil {
		return usageErr(err)
	}
	var anchor *audit.Anchor
	if expectHead != "" {
		if tenant == "" {
			fmt.Fprintln(errOut, "audit verify: --expect-head needs --tenant (a head belongs to one tenant's chain)")
			return errUsage
		}
		a, err := audit.ParseAnchor(expectHead)
		if err != nil {
			fmt.Fprintf(errOut, "audit verify: --expect-head: %v\n", err)
			return errUsage
		}
		anchor = &a
	}
	pool, err := openAdmin(ctx, &dbf)
	if err != nil {
		return err
	}
	defer pool.Close()
	var ids []uuid.UUID
	if tenant != "" {
		t, err := findTenant(ctx, pool, tenant)
		if err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		ids = append(ids, t.ID)
	} else {
		list, err := tenants.List(ctx, pool)
		if err != nil {
			return err
		}
		for _, t := range list {
			ids = append(ids, t.ID)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	var results []audit.Verification
	for _, id := range ids {
		var v audit.Verification
		err := db.InTenant(db.WithReadOnly(ctx), pool, id, func(tx pgx.Tx) error {
			var err error
			if anchor != nil {
				v, err = audit.VerifyAnchored(ctx, tx, id, *anchor)
			} else {
				v, err = audit.Verify(ctx, tx, id)
			}
			return err
		})
		if err != nil {
			return err
		}
		results = append(results, v)
	}
	broken := false
	if asJSON {
		items := make([]map[string]any, 0, len(results))
		for _, v := range results {
			head := audit.Anchor{Seq: v.HeadSeq, Hash: v.HeadHash}
			item := map[string]any{"tenant_id": v.TenantID, "verified": v.OK(), "event_count": v.EventCount,
				"head_seq": v.HeadSeq, "head_hash": hex.EncodeToString(v.HeadHash), "head": head.String(), "first_broken": nil}
			if anchor != nil {
				item["expected_head"] = anchor.String()
			}
			if v.Broken != nil {
				broken = true
				item["first_broken"] = map[string]any{"seq": v.Broken.Seq, "event_id": v.Broken.EventID, "reason": v.Broken.Reason}
			}
			items = append(items, item)
		}
		if err := writeJSONTo(out, items); err != nil {
			return err
		}
	} else {
		for _, v := range results {
			if v.Broken != nil {
				broken = true
				id := v.Broken.EventID
				if id == "" {
					id = "missing"
				}
				fmt.Fprintf(out, "tenant %s: BROKEN at seq %d (event %s): %s\n", v.TenantID, v.Broken.Seq, id, v.Broken.Reason)
				continue
			}
			head := audit.Anchor{Seq: v.HeadSeq, Hash: v.HeadHash}
			fmt.Fprintf(out, "tenant %s: verified %d events; head %s", v.TenantID, v.EventCount, head)
			if anchor != nil {
				fmt.Fprintf(out, "; the expected head %s is in the chain", anchor)
			}
			fmt.Fprintln(out)
		}
	}
	if broken {
		return errVerifyFailed
	}
	return nil
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "help"
}

// pickSubcommand checks the subcommand of a command group (tenant create,
// tenant list). Asked for help (-h, --help, help), it prints the group's
// usage: every subcommand with its flags, as the subcommand's own flag set
// prints them (run is the group's command, run with SUB -h), and returns
// flag.ErrHelp; help SUB prints one. A missing or unknown subcommand prints
// the same usage and returns errUsage. A known one returns nil.
func pickSubcommand(ctx context.Context, group string, subs []string, args []string, errOut io.Writer,
	run func(ctx context.Context, args []string, out, errOut io.Writer) error) error {
	if len(args) > 0 && slices.Contains(subs, args[0]) {
		return nil
	}
	if len(args) == 2 && args[0] == "help" && slices.Contains(subs, args[1]) {
		return run(ctx, []string{args[1], "-h"}, io.Discard, errOut)
	}
	for i, sub := range subs {
		// One subcommand's own usage names it; several get a summary line.
		if i == 0 && len(subs) > 1 {
			fmt.Fprintf(errOut, "Usage: edgeward-controlplane %s %s [flags]\n\n", group, strings.Join(subs, "|"))
		} else if i > 0 {
			fmt.Fprintln(errOut)
		}
		_ = run(ctx, []string{sub, "-h"}, io.Discard, errOut)
	}
	switch {
	case len(args) > 0 && isHelp(args[0]):
		return flag.ErrHelp
	case len(args) > 0:
		return fmt.Errorf("%s: unknown subcommand %q: %w", group, args[0], errUsage)
	}
	return fmt.Errorf("%s: name a subcommand: %s: %w", group, strings.Join(subs, ", "), errUsage)
}

// findTenant resolves a --tenant value: a tenant's id or its name.
func findTenant(ctx context.Context, pool *pgxpool.Pool, ref string) (tenants.Tenant, error) {
	t, err := tenants.Resolve(ctx, pool, ref)
	if errors.Is(err, tenants.ErrNotFound) {
		return t, fmt.Errorf("%w (see: edgeward-controlplane tenant list)", err)
	}
	return t, err
}

// describe is an error as an operator reads it. Operator commands share
// the API's rules, whose problems name each bad field; without those
// details "422 validation_failed: unknown role" would not say which roles
// there are.
func describe(err error) string {
	msg := err.Error()
	var p *problem.Problem
	if !errors.As(err, &p) {
		return msg
	}
	for _, f := range p.Errors {
		name := strings.TrimPrefix(f.Pointer, "#/")
		if name == "" {
			name = f.Parameter
		}
		msg += fmt.Sprintf("; %s: %s", name, f.Detail)
	}
	return msg
}

func usageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errUsage // the flag package has printed the problem and the usage
}

func openAdmin(ctx context.Context, d *dbFlags) (*pgxpool.Pool, error) {
	url, err := d.admin()
	if err != nil {
		return nil, err
	}
	return db.Open(ctx, url)
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
