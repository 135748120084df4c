// Package reporter is the agent's main loop. Every interval it collects the
// host facts into a report and appends it to the durable queue; then it
// sends what the queue holds, oldest first and in batches, deleting only
// what the control plane acknowledged. When sending fails it backs off (capped,
// jittered) and keeps queueing. When the queue itself cannot be written (a
// full disk), the reports of that time are lost but counted, and the agent
// keeps calling the control plane with its queue's figures so the condition
// is seen while it lasts. It rotates the client certificate at half its
// lifetime, and writes status.json for `edgeward-agent status`.
package reporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgeward/edgeward/agent/internal/collect"
	"github.com/edgeward/edgeward/agent/internal/identity"
	"github.com/edgeward/edgeward/agent/internal/queue"
	"github.com/edgeward/edgeward/agent/internal/transport"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// QueueFile is the queue's file in the state directory.
const QueueFile = "queue.db"

// Batch bounds of one heartbeat call.
const (
	batchReports = 200
	batchBytes   = 1 << 20
)

// Backoff bounds after a failed send.
const (
	minBackoff = time.Second
	maxBackoff = 5 * time.Minute
)

// CrashEnv names a fault-injection point for the end-to-end tests of
// crash safety: when set to a step name, the process exits abruptly at that
// step, as kill -9 would. Never set in production.
const CrashEnv = "EDGEWARD_AGENT_TEST_CRASH"

// QueueFullEnv names a fault-injection point for the end-to-end tests of a
// full disk: when set to a file's path, every write of the queue fails with
// ENOSPC for as long as that file exists. Never set in production.
const QueueFullEnv = "EDGEWARD_AGENT_TEST_QUEUE_FULL"

// Options configure the loop.
type Options struct {
	Dir     string
	Version string
	Logger  *slog.Logger
	Queue   queue.Options
}

// Reporter is a running agent.
type Reporter struct {
	opts     Options
	log      *slog.Logger
	q        *queue.Queue
	client   *transport.Client
	interval time.Duration
	rotateAt time.Time
	backoff  time.Duration
	status   Status
	hostname string

	disc discovery
	// collectNow asks the loop to collect a report at once (a command).
	collectNow bool
	// results are command results waiting for the next report.
	results []*agentv1.CommandResult
	// discoveryCommand and rotateCommand are commands whose results come
	// when their work is done.
	discoveryCommand string
	rotateCommand    string
	// queueFailing remembers that the queue could not be written, so the
	// start and the end of a failure are logged once each.
	queueFailing bool
}

// Command names, as logged and as the REST API spells them.
const (
	cmdRefreshFacts      = "refresh_facts"
	cmdRunDiscovery      = "run_discovery"
	cmdRotateCertificate = "rotate_certificate"
)

// Run loads the identity, opens the queue and runs until ctx ends.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if full := os.Getenv(QueueFullEnv); full != "" && opts.Queue.WriteFault == nil {
		queuePath := filepath.Join(opts.Dir, QueueFile)
		opts.Queue.WriteFault = func() error {
			if _, err := os.Stat(full); err == nil {
				return &os.PathError{Op: "write", Path: queuePath, Err: syscall.ENOSPC}
			}
			return nil
		}
	}
	// The queue's lock makes this process the owner of the state
	// directory; only then may the identity's files be repaired.
	q, err := queue.Open(filepath.Join(opts.Dir, QueueFile), opts.Queue)
	if err != nil {
		return err
	}
	defer func() { _ = q.Close() }()
	id, err := identity.Load(opts.Dir)
	if err != nil {
		return err
	}
	r := &Reporter{opts: opts, log: log, q: q, client: transport.NewClient(id.Config.Server, id)}
	defer r.client.Close()
	r.interval = time.Duration(id.Config.HeartbeatIntervalSeconds) * time.Second
	if r.interval <= 0 {
		r.interval = time.Minute
	}
	r.status = Status{PID: os.Getpid(), State: StateStarting, AgentID: id.Config.AgentID, Server: id.Config.Server}
	r.planRotation(id)
	if prev, err := ReadStatus(opts.Dir); err == nil {
		r.status.LastSendAt = prev.LastSendAt
	}
	log.Info("agent running", "agent_id", id.Config.AgentID, "server", id.Config.Server, "interval", r.interval.String())
	return r.loop(ctx)
}

func (r *Reporter) loop(ctx context.Context) error {
	nextCollect := time.Now()
	for {
		now := time.Now()
		if r.collectNow || !now.Before(nextCollect) {
			r.collectNow = false
			if err := r.enqueue(ctx); err != nil {
				r.log.Error("queue report", "error", err.Error())
			}
			r.observeQueue()
			nextCollect = now.Add(r.interval)
		}
		wait := time.Until(nextCollect)
		if err := r.flush(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.fail(err)
			if r.status.State == StateRefused {
				// A refused agent (revoked, replaced) does not heal by
				// retrying every interval: it waits the full backoff.
				wait = r.nextBackoff()
			} else {
				wait = min(wait, r.nextBackoff())
			}
		} else {
			r.backoff = 0
			if err := r.maybeRotate(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("certificate rotation failed; will retry", "error", err.Error())
				wait = min(wait, r.nextBackoff())
			}
		}
		r.writeStatus()
		if r.collectNow {
			continue
		}
		select {
		case <-ctx.Done():
			r.status.State = StateStopped
			r.writeStatus()
			return nil
		case <-time.After(max(wait, 0)):
		}
	}
}

// enqueue collects a report and commits it to the queue before any send.
func (r *Reporter) enqueue(ctx context.Context) error {
	facts, err := collect.Facts(ctx, r.opts.Version)
	if err != nil {
		return err
	}
	r.hostname = facts.GetHostname()
	st, err := r.q.Stats()
	if err != nil {
		return err
	}
	rep := &agentv1.Report{
		CreatedAt: timestamppb.Now(),
		Facts:     facts,
		// Not live: a report that is stored proves the queue was writable.
		Queue: queueStats(st, false),
	}
	obs, dropped, err := r.disc.observe(ctx, time.Now())
	if err != nil {
		r.log.Warn("neighbour tables not read", "error", err.Error())
	}
	rep.Observations, rep.ObservationsDropped = obs, dropped
	if r.discoveryCommand != "" {
		if err != nil {
			r.result(r.discoveryCommand, cmdRunDiscovery, false, "reading the neighbour tables failed: "+err.Error())
		} else {
			r.result(r.discoveryCommand, cmdRunDiscovery, true, fmt.Sprintf("%d neighbours reported, %d outside the policy dropped", len(obs), dropped))
		}
		r.discoveryCommand = ""
	}
	rep.CommandResults = r.results
	b, err := proto.Marshal(rep)
	if err != nil {
		return err
	}
	if _, err = r.q.Append(b); err != nil {
		return err
	}
	// The results are in the durable queue now.
	r.results = nil
	return nil
}

// queueStats are the queue's figures as the control plane reads them. Live
// figures (sent beside the reports of a heartbeat) say whether the queue is
// failing now; a queued report's never do, since it was written.
func queueStats(st queue.Stats, live bool) *agentv1.QueueStats {
	qs := &agentv1.QueueStats{Depth: uint64(st.Depth), Dropped: st.Dropped, Unqueued: st.Unqueued}
	if !st.LastErrorAt.IsZero() {
		qs.LastErrorKind, qs.LastErrorAt = errorKind(st.LastErrorKind), timestamppb.New(st.LastErrorAt)
	}
	if live && st.Failing != nil {
		qs.FailingSince = timestamppb.New(st.FailingSince)
	}
	return qs
}

func errorKind(k queue.ErrorKind) agentv1.QueueErrorKind {
	switch k {
	case queue.KindNoSpace:
		return agentv1.QueueErrorKind_QUEUE_ERROR_KIND_NO_SPACE
	case queue.KindQuota:
		return agentv1.QueueErrorKind_QUEUE_ERROR_KIND_QUOTA
	case queue.KindReadOnly:
		return agentv1.QueueErrorKind_QUEUE_ERROR_KIND_READ_ONLY
	case queue.KindIO:
		return agentv1.QueueErrorKind_QUEUE_ERROR_KIND_IO
	case queue.KindTooLarge:
		return agentv1.QueueErrorKind_QUEUE_ERROR_KIND_TOO_LARGE
	}
	return agentv1.QueueErrorKind_QUEUE_ERROR_KIND_OTHER
}

// flush sends the queue until it is empty. Every call carries the queue's
// live figures; when the queue cannot be written and holds nothing, one
// call carries only them, so the control plane hears of the failure.
func (r *Reporter) flush(ctx context.Context) error {
	sent := false
	for {
		recs, err := r.q.Peek(batchReports, batchBytes)
		if err != nil {
			return err
		}
		st, err := r.q.Stats()
		if err != nil {
			return err
		}
		if len(recs) == 0 && (sent || st.Failing == nil) {
			return nil
		}
		reports := make([]*agentv1.Report, 0, len(recs))
		for _, rec := range recs {
			rep := &agentv1.Report{}
			if err := proto.Unmarshal(rec.Payload, rep); err != nil {
				// Unreadable (never written by this agent): acknowledge it
				// away rather than block the queue forever.
				r.log.Error("dropping unreadable queued report", "seq", rec.Seq, "error", err.Error())
				_, _ = r.q.Ack(rec.Seq)
				continue
			}
			rep.Seq = rec.Seq
			reports = append(reports, rep)
		}
		if len(recs) > 0 && len(reports) == 0 {
			continue
		}
		crashAt("send")
		resp, err := r.client.Heartbeat(ctx, &agentv1.HeartbeatRequest{Reports: reports, Queue: queueStats(st, true)})
		if err != nil {
			return err
		}
		sent = true
		crashAt("acked-before-delete")
		n, err := r.q.Ack(resp.GetAckedSeqs()...)
		if err != nil {
			return err
		}
		r.status.LastSendAt = time.Now().UTC()
		r.status.State, r.status.LastError = StateOK, ""
		if iv := resp.GetNextInterval().AsDuration(); iv > 0 && iv != r.interval {
			r.interval = iv
			r.log.Info("heartbeat interval changed", "interval", iv.String())
		}
		if resp.GetDiscovery().GetVersion() != r.disc.version || resp.GetDiscovery().GetPassiveNeighbor() != r.disc.passive {
			r.log.Info("discovery policy", "passive_neighbor", resp.GetDiscovery().GetPassiveNeighbor(), "cidrs", resp.GetDiscovery().GetAllowedCidrs(), "version", resp.GetDiscovery().GetVersion())
		}
		r.disc.update(resp.GetDiscovery())
		r.runCommands(resp.GetCommands())
		if len(reports) > 0 && n == 0 {
			return fmt.Errorf("the control plane acknowledged none of %d reports", len(reports))
		}
	}
}

// observeQueue publishes the queue's figures in the status and logs when
// the queue stops and starts being writable.
func (r *Reporter) observeQueue() {
	st, err := r.q.Stats()
	if err != nil {
		r.log.Warn("read queue figures", "error", err.Error())
		return
	}
	switch {
	case st.Failing != nil && !r.queueFailing:
		r.log.Error("the queue cannot be written: new reports are lost, and counted, until it can",
			"error", st.Failing.Error(), "kind", string(st.LastErrorKind))
	case st.Failing == nil && r.queueFailing:
		r.log.Info("the queue can be written again", "unqueued_total", st.Unqueued)
	}
	r.queueFailing = st.Failing != nil
	s := &r.status
	s.QueueDepth, s.QueueDropped, s.QueueUnqueued = st.Depth, st.Dropped, st.Unqueued
	s.QueueError, s.QueueErrorSince = "", time.Time{}
	if st.Failing != nil {
		s.QueueError, s.QueueErrorSince = st.Failing.Error(), st.FailingSince.UTC()
	}
	s.QueueLastErrorKind, s.QueueLastErrorAt = string(st.LastErrorKind), time.Time{}
	if !st.LastErrorAt.IsZero() {
		s.QueueLastErrorAt = st.LastErrorAt.UTC()
	}
}

func (r *Reporter) fail(err error) {
	var refused *transport.Refused
	if errors.As(err, &refused) {
		r.status.State = StateRefused
		r.log.Error("the control plane refused this agent", "reason", refused.Msg)
	} else {
		r.status.State = StateRetrying
		r.log.Warn("send failed; queued reports are kept", "error", err.Error())
	}
	r.status.LastError, r.status.LastErrorAt = err.Error(), time.Now().UTC()
}

func (r *Reporter) nextBackoff() time.Duration {
	if r.backoff == 0 {
		r.backoff = minBackoff
	} else {
		r.backoff = min(2*r.backoff, maxBackoff)
	}
	if r.status.State == StateRefused {
		// Refusals do not heal by retrying fast (a revoked agent).
		r.backoff = maxBackoff
	}
	// Full jitter in [backoff/2, backoff), so agents that lost the control
	// plane together do not return together.
	return r.backoff/2 + rand.N(r.backoff/2+1)
}

// planRotation schedules the next rotation at half the certificate's
// lifetime plus up to a tenth of jitter.
func (r *Reporter) planRotation(id *identity.Identity) {
	life := id.Cert.NotAfter.Sub(id.Cert.NotBefore)
	r.rotateAt = id.Cert.NotBefore.Add(life/2 + rand.N(life/10+1))
	r.status.CertificateNotAfter = id.Cert.NotAfter.UTC()
	r.status.RotateAt = r.rotateAt.UTC()
}

// maybeRotate replaces the certificate once it is due. Each step leaves the
// state directory in a form identity.Load recovers from, and the server
// keeps the old certificate valid until the new one is used, so a crash or
// a lost reply anywhere leaves the agent connectable:
//
//  1. agent.key.next is written (crash: the old pair is used; the next
//     attempt makes a new key);
//  2. RotateCertificate issues a certificate (crash or lost reply: the old
//     certificate stays `previous` and valid; the next attempt retires the
//     unused one);
//  3. agent.crt.next is written (crash: Load prefers the new pair);
//  4. the pair is promoted and used; its first use retires the old one.
func (r *Reporter) maybeRotate(ctx context.Context) error {
	if time.Now().Before(r.rotateAt) {
		return nil
	}
	err := r.rotate(ctx)
	if r.rotateCommand != "" {
		if err != nil {
			r.result(r.rotateCommand, cmdRotateCertificate, false, "rotation failed: "+err.Error())
		} else {
			r.result(r.rotateCommand, cmdRotateCertificate, true, "certificate rotated; it expires "+r.status.CertificateNotAfter.Format(time.RFC3339))
		}
		r.rotateCommand = ""
		r.collectNow = true // report the result promptly
	}
	return err
}

func (r *Reporter) rotate(ctx context.Context) error {
	rot, err := identity.BeginRotation(r.opts.Dir)
	if err != nil {
		return err
	}
	crashAt("rotate-key-saved")
	if rot.Cert == nil {
		csr, err := identity.CSR(rot.Key, r.hostname)
		if err != nil {
			rot.Abandon()
			return err
		}
		resp, err := r.client.RotateCertificate(ctx, csr)
		if err != nil {
			// Nothing usable was issued for this key (or the reply was lost,
			// and the server still accepts the current certificate).
			rot.Abandon()
			return err
		}
		crashAt("rotate-issued")
		if err := rot.SaveCertificate(resp.GetCertificateDer()); err != nil {
			rot.Abandon()
			return err
		}
		crashAt("rotate-cert-saved")
	}
	id, err := rot.Finish()
	if err != nil {
		return err
	}
	crashAt("rotate-promoted")
	r.client.SetIdentity(id)
	r.planRotation(id)
	r.log.Info("certificate rotated", "not_after", id.Cert.NotAfter.UTC().Format(time.RFC3339))
	// The next call is the new certificate's first use.
	return nil
}

// writeStatus publishes the status. Its state is how sending goes, unless
// the queue cannot be written: that is said first, as it loses reports.
func (r *Reporter) writeStatus() {
	r.observeQueue()
	r.status.UpdatedAt = time.Now().UTC()
	r.status.Interval = r.interval.String()
	st := r.status
	st.SendState = st.State
	if st.QueueError != "" && st.State != StateRefused && st.State != StateStopped {
		st.State = StateQueueFailing
	}
	if err := WriteStatus(r.opts.Dir, st); err != nil {
		r.log.Warn("write status", "error", err.Error())
	}
}

func crashAt(step string) {
	if os.Getenv(CrashEnv) == step {
		fmt.Fprintf(os.Stderr, "edgeward-agent: test crash at %s\n", step)
		os.Exit(137)
	}
}
