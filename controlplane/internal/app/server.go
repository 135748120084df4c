// Package app wires the control plane together: configuration, the rooms,
// the HTTP layer and the server's start and stop. It is the only package
// that knows every other one.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/riverqueue/river"

	"github.com/edgeward/edgeward/controlplane/internal/agents"
	"github.com/edgeward/edgeward/controlplane/internal/alerts"
	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/auth"
	"github.com/edgeward/edgeward/controlplane/internal/compliance"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhook"
	"github.com/edgeward/edgeward/controlplane/internal/discovery"
	"github.com/edgeward/edgeward/controlplane/internal/evidence"
	"github.com/edgeward/edgeward/controlplane/internal/httpx"
	"github.com/edgeward/edgeward/controlplane/internal/jobs"
	"github.com/edgeward/edgeward/controlplane/internal/pki"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/secrets"
	"github.com/edgeward/edgeward/controlplane/internal/tickets"
)

// ServeConfig configures a running control plane.
type ServeConfig struct {
	DatabaseURL     string
	Listen          string
	DataDir         string
	PublicHosts     []string
	TLSCertFile     string
	TLSKeyFile      string
	MaxBodyBytes    int64
	TrustedProxies  []netip.Prefix
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// AgentCertLifetime and AgentHeartbeatInterval default to the agents
	// room's defaults (30 days, 60 s).
	AgentCertLifetime      time.Duration
	AgentHeartbeatInterval time.Duration
	// RetentionInterval is how often observations past their site's
	// retention are deleted (default discovery.DefaultRetentionInterval).
	RetentionInterval time.Duration
	// ComplianceInterval is how often every tenant's controls are
	// evaluated besides after domain events (compliance.DefaultInterval).
	ComplianceInterval time.Duration
	// Deliveries are the webhook delivery settings.
	Deliveries DeliverySettings
}

// DeliverySettings configure webhook delivery. Zero values take the
// deliveries room's defaults.
type DeliverySettings struct {
	// SecretsKeys are key references (env:NAME, file:PATH) sealing stored
	// credentials; empty: <data-dir>/secrets.key.
	SecretsKeys []string
	// AllowHosts are host names, addresses and CIDRs exempt from the SSRF
	// guard (on-premises receivers, tests).
	AllowHosts []string
	// CAFile holds extra CAs receivers' certificates may chain to.
	CAFile        string
	Timeout       time.Duration
	Schedule      []time.Duration
	DisableAfter  time.Duration
	Workers       int
	SweepInterval time.Duration
	// RescueAfter is when a running job is taken for lost (default: the
	// job timeout plus a minute).
	RescueAfter time.Duration
}

// Server is a started control plane.
type Server struct {
	// URL is the base URL the server answers on, e.g. https://127.0.0.1:8443.
	URL string
	// CAFile is the certificate that verifies the server (its own CA).
	CAFile string
	CA     *pki.CA

	cfg    ServeConfig
	pool   *pgxpool.Pool
	http   *http.Server
	served chan error
	// stopBackground ends the background work (ingest, notifications);
	// backgroundDone closes when it has.
	stopBackground context.CancelFunc
	backgroundDone chan struct{}
}

// rest is the strict server: each room serves the operations of its area.
// The aliases give the embedded rooms distinct field names.
type rest struct {
	*authAPI
	*auditAPI
	*tokensAPI
	*agentsService
	*assetsAPI
	*discoveryAPI
	*alertsAPI
	*evidenceAPI
	*ticketsAPI
	*deliveriesAPI
	*complianceAPI
}

type (
	authAPI       = auth.API
	auditAPI      = audit.API
	tokensAPI     = agents.TokensAPI
	agentsService = agents.Service
	assetsAPI     = assets.API
	discoveryAPI  = discovery.API
	alertsAPI     = alerts.API
	evidenceAPI   = evidence.API
	ticketsAPI    = tickets.API
	deliveriesAPI = deliveries.API
	complianceAPI = compliance.API
)

// health and readiness are the bodies of /healthz and /readyz (schemas
// Health and Readiness in the spec).
type health struct {
	Status string `json:"status"`
}

type readiness struct {
	Status string `json:"status"`
	Checks struct {
		Database string `json:"database"`
	} `json:"checks"`
}

// Start connects to the database, checks that it may serve, and starts
// listening. It returns once the listener is open.
func Start(ctx context.Context, cfg ServeConfig) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		cfg.Logger = log
	}
	if cfg.DatabaseURL == "" {
		return nil, errors.New("serve: no database: set --database-url (EDGEWARD_DATABASE_URL) to the runtime role's URL")
	}
	index, err := api.Spec()
	if err != nil {
		return nil, err
	}
	pool, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s := &Server{cfg: cfg, pool: pool, served: make(chan error, 1)}
	if err := s.checkDatabase(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	tlsConfig, err := s.tlsConfig()
	if err != nil {
		pool.Close()
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), poolCollector{pool})
	authn := &auth.Authenticator{Pool: pool}
	assetStore := assets.Store{}
	agentsCfg := agents.Config{Pool: pool, CA: s.CA, Assets: assetStore, CertLifetime: cfg.AgentCertLifetime,
		HeartbeatInterval: cfg.AgentHeartbeatInterval, Metrics: agents.NewMetrics(reg),
		Discovery: discovery.Ingest{Assets: assetStore, Alerts: alerts.Raiser{Assets: assetStore}}}
	agentSvc := agents.New(agentsCfg, log)
	keys, err := secrets.Load(cfg.Deliveries.SecretsKeys, cfg.DataDir)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	delivery, evaluations, jobClient, err := s.deliveries(reg, keys)
	if err != nil {
		pool.Close()
		return nil, err
	}
	gate := httpx.Config{
		Index:          index,
		Auth:           authn,
		AgentAuth:      agentSvc,
		Logger:         log,
		Metrics:        httpx.NewMetrics(reg),
		MaxBodyBytes:   cfg.MaxBodyBytes,
		TrustedProxies: cfg.TrustedProxies,
		Pool:           pool,
		CursorKeys:     keys.DeriveKeys("cursor"),
	}
	mux := http.NewServeMux()
	strict := api.NewStrictHandlerWithOptions(rest{
		authAPI:       &auth.API{Pool: pool, Index: index},
		auditAPI:      &audit.API{Pool: pool},
		tokensAPI:     &agents.TokensAPI{Cfg: &agentsCfg},
		agentsService: agentSvc,
		assetsAPI:     &assets.API{Pool: pool},
		discoveryAPI:  &discovery.API{Pool: pool},
		alertsAPI:     &alerts.API{Pool: pool, Assets: assetStore},
		evidenceAPI:   &evidence.API{Pool: pool},
		ticketsAPI:    &tickets.API{Pool: pool},
		deliveriesAPI: &deliveries.API{S: delivery},
		complianceAPI: &compliance.API{Pool: pool, Runner: evaluations},
	}, nil, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc:  gate.DecodeErrorHandler(),
		ResponseErrorHandlerFunc: gate.ErrorHandler(),
	})
	api.HandlerWithOptions(strict, api.StdHTTPServerOptions{
		BaseRouter: mux,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			problem.Write(w, r, problem.New(http.StatusBadRequest, problem.CodeInvalidParameter, err.Error()), httpx.RequestID(r.Context()))
		},
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, health{Status: "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readiness)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	// One listener: the agent protocol (Connect, gRPC, gRPC-Web) by its
	// procedure paths, everything else through the REST gate.
	root := http.NewServeMux()
	for path, h := range agentSvc.Handlers() {
		root.Handle(path, httpx.RPCHandler(gate, h))
	}
	root.Handle("/", httpx.Handler(gate, mux))

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("serve: listen on %s: %w", cfg.Listen, err)
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopBackground, s.backgroundDone = stop, make(chan struct{})
	retention := discovery.Retention{Pool: pool, Interval: cfg.RetentionInterval, Logger: log}
	go func() {
		defer close(s.backgroundDone)
		var wg sync.WaitGroup
		wg.Go(func() { agentSvc.Run(bg) })
		wg.Go(func() { retention.Run(bg) })
		wg.Go(func() { delivery.Run(bg) })
		wg.Go(func() { runJobs(bg, jobClient, log) })
		wg.Wait()
	}()
	s.http = &http.Server{
		Handler:           root,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	s.URL = "https://" + urlHost(ln.Addr().(*net.TCPAddr), cfg.Listen)
	go func() { s.served <- s.http.ServeTLS(ln, "", "") }()
	log.Info("control plane serving", "url", s.URL, "ca", s.CAFile)
	return s, nil
}

// deliveries builds the webhook delivery service and the job client that
// runs its attempts.
func (s *Server) deliveries(reg prometheus.Registerer, keys *secrets.Keyring) (*deliveries.Service, *compliance.Runner, *jobs.Client, error) {
	d := s.cfg.Deliveries
	guard, err := webhook.ParseAllow(d.AllowHosts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("serve: --webhook-allow-hosts: %w", err)
	}
	sender := &webhook.Sender{Guard: guard, Timeout: d.Timeout}
	if d.CAFile != "" {
		pemBytes, err := os.ReadFile(d.CAFile)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("serve: --webhook-ca-file: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, nil, nil, fmt.Errorf("serve: --webhook-ca-file %s holds no PEM certificate", d.CAFile)
		}
		sender.RootCAs = roots
	}
	evaluations := compliance.NewRunner(s.pool, s.cfg.ComplianceInterval, s.cfg.Logger)
	svc := deliveries.New(deliveries.Config{Pool: s.pool, Keys: keys, Sender: sender, Schedule: d.Schedule,
		DisableAfter: d.DisableAfter, SweepInterval: d.SweepInterval, Logger: s.cfg.Logger, Metrics: deliveries.NewMetrics(reg),
		AfterDispatch: evaluations.OnEvents})
	workers := river.NewWorkers()
	svc.Register(workers)
	evaluations.Register(workers)
	rescue := d.RescueAfter
	if rescue <= 0 {
		rescue = svc.JobTimeout() + time.Minute
	}
	n := d.Workers
	if n <= 0 {
		n = deliveries.DefaultWorkers
	}
	client, err := jobs.New(jobs.Config{Pool: s.pool, Workers: workers, Queues: map[string]int{deliveries.Queue: n, compliance.Queue: 2},
		JobTimeout: svc.JobTimeout(), RescueAfter: rescue, PeriodicJobs: evaluations.PeriodicJobs(), Logger: s.cfg.Logger})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("serve: %w", err)
	}
	svc.Attach(client)
	evaluations.Attach(client)
	return svc, evaluations, client, nil
}

// runJobs runs the job client until ctx ends, then lets running jobs finish
// for a few seconds before cancelling them (a cancelled attempt is made
// again by whichever replica picks its job up).
func runJobs(ctx context.Context, c *jobs.Client, log *slog.Logger) {
	if err := c.Start(context.WithoutCancel(ctx)); err != nil {
		log.Error("background jobs did not start", "err", err)
		return
	}
	<-ctx.Done()
	soft, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Stop(soft); err != nil {
		hard, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.StopAndCancel(hard)
	}
}

// checkDatabase refuses a database role that row-level security would not
// bind, and a database that was never migrated.
func (s *Server) checkDatabase(ctx context.Context) error {
	facts, err := db.CurrentRole(ctx, s.pool)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := db.CheckRuntimeRole(facts); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	var migrated bool
	if err := s.pool.QueryRow(ctx, "SELECT to_regclass('public.audit_events') IS NOT NULL").Scan(&migrated); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if !migrated {
		return errors.New("serve: the database has no Edgeward schema; run `edgeward-controlplane migrate` first")
	}
	return nil
}

func (s *Server) tlsConfig() (*tls.Config, error) {
	if s.cfg.DataDir == "" {
		return nil, errors.New("serve: --data-dir is required (it holds the control plane's CA)")
	}
	ca, err := pki.LoadOrCreate(s.cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s.CA = ca
	s.CAFile, _ = filepath.Abs(filepath.Join(s.cfg.DataDir, pki.CertFile))
	// Agents present client certificates; the agents room verifies them (so
	// it can say why one is refused). REST callers present none.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert, ClientCAs: ca.Pool()}
	if s.cfg.TLSCertFile != "" || s.cfg.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("serve: load --tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		s.CAFile = "" // the operator's certificate chains to the operator's CA
		return cfg, nil
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, s.cfg.PublicHosts...)
	cfg.GetCertificate = (&pki.ServerCert{CA: ca, Hosts: hosts, Lifetime: 30 * 24 * time.Hour}).GetCertificate
	return cfg, nil
}

func (s *Server) readiness(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var out readiness
	if err := s.pool.Ping(ctx); err != nil {
		s.cfg.Logger.Warn("not ready: database", "error", err.Error())
		out.Status, out.Checks.Database = "unavailable", "unavailable"
		writeJSON(w, http.StatusServiceUnavailable, out)
		return
	}
	out.Status, out.Checks.Database = "ready", "ok"
	writeJSON(w, http.StatusOK, out)
}

// Wait blocks until the server stops on its own (a listener failure).
func (s *Server) Wait() <-chan error { return s.served }

// Shutdown stops accepting connections, lets requests in flight finish
// (bounded by the shutdown timeout) and closes the database pool.
func (s *Server) Shutdown(ctx context.Context) error {
	timeout := s.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := s.http.Shutdown(ctx)
	s.stopBackground()
	<-s.backgroundDone
	s.pool.Close()
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func urlHost(addr *net.TCPAddr, listen string) string {
	host, _, _ := net.SplitHostPort(listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, fmt.Sprint(addr.Port))
}
