package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/auth"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/db/pgcluster"
	"github.com/edgeward/edgeward/controlplane/internal/tenants"
)

// Names of the local development setup.
const (
	devDatabase  = "edgeward"
	devOwnerRole = "edgeward_owner"
	devTenant    = "demo"
)

func runDev(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlagSet("dev", "Run a complete local control plane: a private PostgreSQL cluster under --dir\n(started, or reused), migrations, a demo tenant with an admin token, and the server.\nCredentials are written to <dir>/demo.env. Ctrl-C stops the server and the cluster.", errOut)
	var dir, agentBin string
	var sf serveFlags
	var lf logFlags
	fs.StringVar(&dir, "dir", ".edgeward", "directory for the cluster, the CA and demo.env")
	fs.StringVar(&agentBin, "agent", defaultAgentBinary(), "edgeward-agent binary to enroll and run beside the server (empty: none)")
	sf.register(fs, "")
	lf.register(fs, "text")
	log, err := lf.parse(fs, args, errOut)
	if err != nil {
		return err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	if sf.dataDir == "" {
		sf.dataDir = filepath.Join(dir, "data")
	}

	fmt.Fprintf(errOut, "Starting PostgreSQL under %s ...\n", filepath.Join(dir, "pg"))
	cluster, err := pgcluster.Ensure(ctx, filepath.Join(dir, "pg"), pgcluster.Options{Durable: true})
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer func() {
		if err := cluster.Stop(context.WithoutCancel(ctx)); err != nil {
			log.Warn("stop postgres", "error", err.Error())
		}
	}()
	ownerURL, appURL, err := devDatabaseSetup(ctx, cluster)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := db.Migrate(ctx, ownerURL, db.MigrateOptions{Logger: log}); err != nil {
		return fmt.Errorf("dev: %w", err)
	}

	cfg, err := sf.config(appURL)
	if err != nil {
		return err
	}
	cfg.Logger = log
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	envPath := filepath.Join(dir, "demo.env")
	token, tenantID, err := devCredentials(ctx, ownerURL, envPath)
	if err != nil {
		_ = s.Shutdown(ctx)
		return fmt.Errorf("dev: %w", err)
	}
	env := map[string]string{"URL": s.URL, "TOKEN": token, "CA": s.CAFile, "TENANT_ID": tenantID,
		envName("database-url"): appURL, envName("admin-database-url"): ownerURL}
	if err := writeEnvFile(envPath, env); err != nil {
		_ = s.Shutdown(ctx)
		return fmt.Errorf("dev: %w", err)
	}
	agentNote := "\n(no edgeward-agent binary given: run with --agent PATH to enroll a local agent)\n"
	if agentBin != "" {
		stopAgent, agentID, err := devAgent(ctx, s, token, agentBin, dir)
		if err != nil {
			_ = s.Shutdown(ctx)
			return fmt.Errorf("dev: local agent: %w", err)
		}
		defer stopAgent()
		agentNote = fmt.Sprintf(`
An agent is enrolled and running on this machine: %s
(state in %s, log in %s). It belongs to the site
"demo: this machine's networks", whose policy lets it read this machine's
neighbour tables (passively: it sends nothing). The devices it sees become
assets; unknown ones raise alerts. See them with:

  . %s && curl --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/agents"
  curl --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/discovery/observations"
  curl --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/alerts?status=open"

%s`, agentID, filepath.Join(dir, "agent"), filepath.Join(dir, "agent.log"), envPath, devWatched(ctx, s, token))
	}
	fmt.Fprintf(out, `
Edgeward control plane is running.

  URL=%s
  CA=%s
  TOKEN=%s

These are also in %s. Try:

  . %s && curl --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/me"
%s
Press Ctrl-C to stop.
`, s.URL, s.CAFile, token, envPath, envPath, agentNote)
	return serveUntilDone(ctx, s)
}

// devDatabaseSetup creates the owner role and the database on the private
// cluster (as its superuser) and returns the owner's and the runtime role's
// URLs. The cluster trusts loopback connections, so no passwords are needed.
func devDatabaseSetup(ctx context.Context, c *pgcluster.Cluster) (ownerURL, appURL string, err error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", "", err
	}
	defer func() { _ = conn.Close(ctx) }()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", devOwnerRole).Scan(&exists); err != nil {
		return "", "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE ROLE "+devOwnerRole+" LOGIN CREATEROLE"); err != nil {
			return "", "", err
		}
	}
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", devDatabase).Scan(&exists); err != nil {
		return "", "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+devDatabase+" OWNER "+devOwnerRole); err != nil {
			return "", "", err
		}
	}
	u := func(role string) string {
		return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", role, c.Port, devDatabase)
	}
	return u(devOwnerRole), u(db.RuntimeRole), nil
}

// devCredentials returns the demo admin token: the one in demo.env while it
// still works, else a new one (bootstrapping the demo tenant on first run).
func devCredentials(ctx context.Context, ownerURL, envPath string) (token, tenantID string, err error) {
	pool, err := db.Open(ctx, ownerURL)
	if err != nil {
		return "", "", err
	}
	defer pool.Close()
	ctx = operatorContext(ctx)
	if old, err := readEnvFile(envPath); err == nil && old["TOKEN"] != "" {
		if id, hash, err := auth.ParseToken(old["TOKEN"]); err == nil {
			var ok bool
			_ = db.InTenant(ctx, pool, id, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() + interval '1 day')`, hash).Scan(&ok)
			})
			if ok {
				return old["TOKEN"], id.String(), nil
			}
		}
	}
	t, err := tenants.Find(ctx, pool, devTenant)
	if err != nil {
		b, err := tenants.Bootstrap(ctx, pool, devTenant, auth.DefaultTokenTTL)
		if err != nil {
			return "", "", err
		}
		return b.Token.Secret, b.Tenant.ID.String(), nil
	}
	var issued auth.IssuedToken
	err = db.InTenant(ctx, pool, t.ID, func(tx pgx.Tx) error {
		now := time.Now()
		var err error
		issued, err = auth.IssueToken(ctx, tx, t.ID, auth.TokenSpec{Name: "dev", Role: caller.RoleTenantAdmin, PrincipalName: "admin"}, now)
		return err
	})
	return issued.Secret, t.ID.String(), err
}

// writeEnvFile writes KEY=value lines a shell can source. The file holds a
// token, so only its owner may read it. The database URLs go under the
// names every operator command reads (EDGEWARD_ADMIN_DATABASE_URL, ...)
// and are exported, so that after sourcing it `edgeward-controlplane
// tenant list` finds the demo database; the token is not exported.
func writeEnvFile(path string, env map[string]string) error {
	var b strings.Builder
	b.WriteString("# Written by edgeward-controlplane dev. Holds an admin token: keep it private.\n")
	for _, k := range []string{"URL", "CA", "TOKEN", "TENANT_ID"} {
		fmt.Fprintf(&b, "%s=%s\n", k, shellQuote(env[k]))
	}
	for _, k := range []string{envName("database-url"), envName("admin-database-url")} {
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(env[k]))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		env[k] = strings.Trim(v, "'")
	}
	return env, sc.Err()
}

// shellQuote quotes s for sh when it needs it; URLs, paths and tokens here
// never contain a single quote.
func shellQuote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"$`\\&;|<>()*?!#~") {
		return "'" + s + "'"
	}
	if _, err := url.Parse(s); err == nil && strings.ContainsAny(s, "?&") {
		return "'" + s + "'"
	}
	return s
}

// defaultAgentBinary is edgeward-agent beside this executable, if it is there.
func defaultAgentBinary() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), "edgeward-agent")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// devAgent enrolls a local agent on first use (with an enrollment token from
// the server's own API, as an administrator would) and runs it until the
// returned stop function is called.
func devAgent(ctx context.Context, s *Server, adminToken, bin, dir string) (stop func(), agentID string, err error) {
	state := filepath.Join(dir, "agent")
	cfgPath := filepath.Join(state, "config.json")
	if _, err := os.Stat(cfgPath); err != nil {
		token, err := devEnrollmentToken(ctx, s, adminToken)
		if err != nil {
			return nil, "", err
		}
		out, err := exec.CommandContext(ctx, bin, "enroll", "--server", s.URL, "--token", token, "--state-dir", state, "--force").CombinedOutput()
		if err != nil {
			return nil, "", fmt.Errorf("enroll: %w\n%s", err, out)
		}
	}
	var cfg struct {
		AgentID string `json:"agent_id"`
	}
	if b, err := os.ReadFile(cfgPath); err == nil {
		_ = json.Unmarshal(b, &cfg)
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(bin, "run", "--state-dir", state)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, "", err
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = logFile.Close()
	}, cfg.AgentID, nil
}

// devAPI calls the server's REST API as the demo admin, as curl would.
type devAPI struct {
	s     *Server
	token string
	hc    *http.Client
}

func newDevAPI(s *Server, token string) devAPI {
	pool := x509.NewCertPool()
	pool.AddCert(s.CA.Cert)
	return devAPI{s: s, token: token, hc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
}

// do sends body (JSON) and decodes the answer into out; a status other than
// want is an error with the problem's detail.
func (c devAPI) do(ctx context.Context, method, path string, header http.Header, body any, want int, out any) (http.Header, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.s.URL+path, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		var p struct {
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(b, &p)
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, p.Detail)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// devSiteName names the site make demo's agent belongs to.
const devSiteName = "demo: this machine's networks"

// devEnrollmentToken creates the demo site, lets its agents watch the
// networks this machine is attached to passively, and returns a token that enrolls
// an agent into it: the demo shows discovery, alerts and evidence on the
// devices the machine already talks to.
func devEnrollmentToken(ctx context.Context, s *Server, adminToken string) (string, error) {
	c := newDevAPI(s, adminToken)
	defer c.hc.CloseIdleConnections()
	type site struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	var sites struct {
		Items []site `json:"items"`
	}
	if _, err := c.do(ctx, "GET", "/api/v1/sites?limit=200", nil, nil, http.StatusOK, &sites); err != nil {
		return "", err
	}
	i := slices.IndexFunc(sites.Items, func(s site) bool { return s.Name == devSiteName })
	var demo site
	if i >= 0 { // the agent's state was removed, the database kept
		demo = sites.Items[i]
	} else if _, err := c.do(ctx, "POST", "/api/v1/sites", nil, map[string]any{"name": devSiteName,
		"description": "created by make demo"}, http.StatusCreated, &demo); err != nil {
		return "", err
	}
	hdr, err := c.do(ctx, "GET", "/api/v1/discovery/policies/"+demo.ID, nil, nil, http.StatusOK, nil)
	if err != nil {
		return "", err
	}
	if _, err := c.do(ctx, "PUT", "/api/v1/discovery/policies/"+demo.ID, http.Header{"If-Match": {hdr.Get("ETag")}}, map[string]any{
		"allowed_cidrs": attachedNetworks(), "allowed_methods": []string{"passive_neighbor"}, "collector_agent_ids": []string{},
		"observation_retention_days": 7, "allowlist": []any{},
	}, http.StatusOK, nil); err != nil {
		return "", err
	}
	var tok struct {
		Token string `json:"token"`
	}
	if _, err := c.do(ctx, "POST", "/api/v1/enrollment-tokens", nil, map[string]any{"name": "make demo: this machine",
		"labels": map[string]string{"source": "demo"}, "site_id": demo.ID}, http.StatusCreated, &tok); err != nil {
		return "", fmt.Errorf("create enrollment token: %w", err)
	}
	return tok.Token, nil
}

// attachedNetworks are the networks this machine's interfaces are directly
// attached to, private or not (a demo on a machine whose LAN is public
// address space would otherwise watch nothing): what the demo may watch
// without looking past the machine's own links. Loopback and link-local
// addresses are left out.
func attachedNetworks() []string {
	out := []string{}
	ifaces, err := net.Interfaces()
	if err != nil {
		return out
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil || !pfx.Addr().IsGlobalUnicast() {
				continue // loopback, link-local, multicast, unspecified
			}
			if c := pfx.Masked().String(); !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// devWatched says what the demo site's policy lets the local agent watch,
// and how to widen it.
func devWatched(ctx context.Context, s *Server, adminToken string) string {
	c := newDevAPI(s, adminToken)
	defer c.hc.CloseIdleConnections()
	var sites struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	if _, err := c.do(ctx, "GET", "/api/v1/sites?limit=200", nil, nil, http.StatusOK, &sites); err != nil {
		return ""
	}
	for _, site := range sites.Items {
		if site.Name != devSiteName {
			continue
		}
		var policy struct {
			AllowedCidrs []string `json:"allowed_cidrs"`
		}
		if _, err := c.do(ctx, "GET", "/api/v1/discovery/policies/"+site.ID, nil, nil, http.StatusOK, &policy); err != nil {
			return ""
		}
		watched := "nothing: this machine had no network but loopback and link-local ones when the site was made"
		if len(policy.AllowedCidrs) > 0 {
			watched = strings.Join(policy.AllowedCidrs, ", ")
		}
		return fmt.Sprintf(`Its site's policy lets it watch %s.
Devices elsewhere are dropped by the agent and counted, not shown. To watch
more networks, change the policy (docs/api/discovery.md):
  curl --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/discovery/policies/%s"
and PUT it back with more allowed_cidrs and its ETag in If-Match.
`, watched, site.ID)
	}
	return ""
}
