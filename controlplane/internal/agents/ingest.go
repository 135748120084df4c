package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/assets"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/discovery"
)

// Report is one heartbeat report of an agent, whichever protocol carried it.
type Report struct {
	// Observations are neighbour-table entries for discovery.
	Observations []discovery.Observation
	// ObservationsDropped counts entries the agent dropped as outside its policy.
	ObservationsDropped int64
	// CommandResults report commands the agent ran.
	CommandResults []CommandResult
	Seq            uint64
	At             time.Time
	Facts          *Facts
	// FactsHash is Facts.Hash(), computed by NewReport on the calling
	// goroutine so the ingest workers do not.
	FactsHash []byte
	Queue     *QueueStats
	Counts    int // observations carried (discovery ingests them)
}

// QueueStats are the agent's own queue figures.
type QueueStats struct {
	// Dropped counts reports the queue's bound dropped; Unqueued, reports
	// the agent could not write to its queue at all.
	Depth, Dropped, Unqueued int64
	// LastErrorKind (no_space, quota, read_only, io, too_large, other) and
	// LastErrorAt describe the most recent failed queue write; empty and nil
	// when the agent reports none.
	LastErrorKind string
	LastErrorAt   *time.Time
	// FailingSince is set while the agent cannot write its queue.
	FailingSince *time.Time
}

// CommandResult is the outcome of a command, as the agent reports it.
type CommandResult struct {
	ID          uuid.UUID
	Succeeded   bool
	Summary     string
	CompletedAt time.Time

	agentID uuid.UUID // the reporting agent, set by ingest
}

// Ack is the outcome of a delivered batch of reports.
type Ack struct {
	// Policy is what the agent may observe; Commands are for it to run.
	Policy   discovery.AgentPolicy
	Commands []PendingCommand
	// Seqs are the delivered reports the server has durably accepted,
	// including ones it had applied before (duplicates).
	Seqs []uint64
	// Duplicates counts the delivered reports that were applied before.
	Duplicates int
	Interval   time.Duration
}

// Ingester applies heartbeats. Calls arriving together are grouped and each
// tenant's group is written in one transaction with multi-row statements,
// so the database cost per heartbeat falls as load rises, and no call waits
// for a timer: a lone heartbeat is written at once.
type Ingester struct {
	cfg     *Config
	log     *slog.Logger
	jobs    chan *job
	workers int
}

type job struct {
	id      Identity
	reports []Report
	// live are the agent's queue figures as of the call, newer than its
	// reports'; nil when the call carried none.
	live *QueueStats
	// commands: the caller can carry commands back to the agent (the
	// Connect heartbeat can; the REST heartbeat's answer has no room).
	commands bool
	done     chan jobResult
}

type jobResult struct {
	ack Ack
	err error
}

const maxBatchJobs = 256

// NewIngester returns an ingester; Run must be running for Submit to return.
func NewIngester(cfg *Config, log *slog.Logger) *Ingester {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Ingester{cfg: cfg, log: log, jobs: make(chan *job, 4*maxBatchJobs), workers: 4}
}

// Run processes heartbeats until ctx ends.
func (in *Ingester) Run(ctx context.Context) {
	done := make(chan struct{})
	for w := 0; w < in.workers; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			in.work(ctx)
		}()
	}
	for w := 0; w < in.workers; w++ {
		<-done
	}
}

func (in *Ingester) work(ctx context.Context) {
	for {
		var batch []*job
		select {
		case <-ctx.Done():
			return
		case j := <-in.jobs:
			batch = append(batch, j)
		}
	drain:
		for len(batch) < maxBatchJobs {
			select {
			case j := <-in.jobs:
				batch = append(batch, j)
			default:
				break drain
			}
		}
		in.apply(ctx, batch)
	}
}

// Submit delivers one agent's reports and waits until they are durably
// applied (or found to be duplicates). live, when not nil, are the agent's
// queue figures as of the call: they are stored after (and so over) those
// of the reports, even when the call carries no report. With commands, the
// agent's pending commands are handed over in the Ack; without, they stay
// queued for a call that can carry them.
func (in *Ingester) Submit(ctx context.Context, id Identity, reports []Report, live *QueueStats, commands bool) (Ack, error) {
	for i := range reports {
		reports[i].truncateTimes()
	}
	j := &job{id: id, reports: reports, live: live, commands: commands, done: make(chan jobResult, 1)}
	select {
	case in.jobs <- j:
	case <-ctx.Done():
		return Ack{}, ctx.Err()
	}
	select {
	case r := <-j.done:
		return r.ack, r.err
	case <-ctx.Done():
		return Ack{}, ctx.Err()
	}
}

func (in *Ingester) apply(ctx context.Context, batch []*job) {
	in.cfg.Metrics.batch(len(batch))
	byTenant := map[uuid.UUID][]*job{}
	for _, j := range batch {
		byTenant[j.id.TenantID] = append(byTenant[j.id.TenantID], j)
	}
	for tenant, jobs := range byTenant {
		results, err := in.applyTenant(ctx, tenant, jobs)
		if err != nil && len(jobs) > 1 {
			// One bad heartbeat must not fail its neighbours: apply them
			// one by one, so only the culprit gets the error.
			in.log.Warn("heartbeat batch failed; applying one by one", "tenant_id", tenant, "heartbeats", len(jobs), "error", err.Error())
			for _, j := range jobs {
				one, err := in.applyTenant(ctx, tenant, []*job{j})
				if err != nil {
					in.log.Error("heartbeat ingest failed", "tenant_id", tenant, "agent_id", j.id.AgentID, "error", err.Error())
					j.done <- jobResult{err: err}
					continue
				}
				j.done <- one[0]
			}
			continue
		}
		for i, j := range jobs {
			if err != nil {
				j.done <- jobResult{err: err}
				continue
			}
			j.done <- results[i]
		}
		if err != nil {
			in.log.Error("heartbeat ingest failed", "tenant_id", tenant, "heartbeats", len(jobs), "error", err.Error())
		}
	}
}

// agentWork is everything a batch delivers for one agent.
type agentWork struct {
	id       uuid.UUID
	hostname string
	reports  []Report    // sorted by seq, distinct
	live     *QueueStats // the newest call's live queue figures
	commands bool        // some call of the agent's can carry commands
}

type agentRow struct {
	siteID    *uuid.UUID
	lastSeq   int64
	factsHash []byte
	assetID   uuid.UUID
	revoked   bool
	neverSeen bool
	interval  int
}

func (in *Ingester) applyTenant(ctx context.Context, tenant uuid.UUID, jobs []*job) ([]jobResult, error) {
	work := map[uuid.UUID]*agentWork{}
	var takers []uuid.UUID // agents with a call that can carry commands
	for _, j := range jobs {
		w := work[j.id.AgentID]
		if w == nil {
			w = &agentWork{id: j.id.AgentID, hostname: j.id.Hostname}
			work[j.id.AgentID] = w
		}
		w.reports = append(w.reports, j.reports...)
		if j.live != nil {
			w.live = j.live
		}
		if j.commands && !w.commands {
			w.commands = true
			takers = append(takers, j.id.AgentID)
		}
	}
	ids := make([]uuid.UUID, 0, len(work))
	for id, w := range work {
		ids = append(ids, id)
		sort.Slice(w.reports, func(a, b int) bool { return w.reports[a].Seq < w.reports[b].Seq })
		distinct := w.reports[:0]
		for i, r := range w.reports {
			if i == 0 || r.Seq != w.reports[i-1].Seq {
				distinct = append(distinct, r)
			}
		}
		w.reports = distinct
	}
	// Lock rows in one order, so concurrent batches never deadlock.
	sort.Slice(ids, func(a, b int) bool { return bytes.Compare(ids[a][:], ids[b][:]) < 0 })

	now := in.cfg.now()
	rows := map[uuid.UUID]agentRow{}
	newLast := map[uuid.UUID]int64{}
	agentPolicies := map[uuid.UUID]discovery.AgentPolicy{}
	var delivered map[uuid.UUID][]PendingCommand
	err := db.InTenant(ctx, in.cfg.Pool, tenant, func(tx pgx.Tx) error {
		r, err := tx.Query(ctx, `
			SELECT id, site_id, last_seq, facts_hash, asset_id, revoked_at IS NOT NULL, last_seen_at IS NULL, heartbeat_interval_seconds
			  FROM agents WHERE id = ANY($1) ORDER BY id FOR UPDATE`, db.UUIDs(ids))
		if err != nil {
			return err
		}
		for r.Next() {
			var id uuid.UUID
			var row agentRow
			if err := r.Scan(&id, &row.siteID, &row.lastSeq, &row.factsHash, &row.assetID, &row.revoked, &row.neverSeen, &row.interval); err != nil {
				r.Close()
				return err
			}
			rows[id] = row
		}
		r.Close()
		if err := r.Err(); err != nil {
			return err
		}

		u := newAgentUpdate(len(ids))
		type discovered struct {
			col     discovery.Collector
			obs     []discovery.Observation
			dropped int64
		}
		var toObserve []discovered
		var results []CommandResult
		claims := map[uuid.UUID][]string{}
		var sightings []assets.Sighting
		var timeline []assets.TimelineEntry
		var changedAgents []uuid.UUID
		type change struct {
			agent  uuid.UUID
			asset  uuid.UUID
			at     time.Time
			seq    uint64
			facts  *Facts
			isBase bool
		}
		var changes []change
		for _, id := range ids {
			row, ok := rows[id]
			if !ok || row.revoked {
				continue
			}
			w := work[id]
			last := row.lastSeq
			applied, firstApplied := int64(0), int64(0)
			hash := row.factsHash
			var latest *Facts
			var latestHash []byte
			var queue *QueueStats
			d := discovered{col: discovery.Collector{AgentID: id, SiteID: row.siteID}}
			for _, rep := range w.reports {
				if int64(rep.Seq) <= row.lastSeq {
					continue
				}
				d.obs = append(d.obs, rep.Observations...)
				d.dropped += rep.ObservationsDropped
				for _, r := range rep.CommandResults {
					r.agentID = id
					results = append(results, r)
				}
				last = int64(rep.Seq)
				if applied == 0 {
					firstApplied = last
				}
				applied++
				if rep.Queue != nil {
					queue = rep.Queue
				}
				if rep.Facts != nil {
					h := rep.factsHash()
					if string(h) != string(hash) {
						if len(changes) == 0 || changes[len(changes)-1].agent != id {
							changes = append(changes, change{agent: id, isBase: true})
							changedAgents = append(changedAgents, id)
						}
						changes = append(changes, change{agent: id, asset: row.assetID, at: rep.At, seq: rep.Seq, facts: rep.Facts})
						hash = h
					}
					latest, latestHash = rep.Facts, h
				}
			}
			if w.live != nil {
				queue = w.live
			}
			newLast[id] = last
			if row.neverSeen && last > row.lastSeq {
				timeline = append(timeline, assets.TimelineEntry{AssetID: row.assetID, At: now, Kind: assets.KindFirstSeen,
					Summary: "first heartbeat from agent " + w.hostname, Details: map[string]any{"agent_id": id.String()}})
			}
			s := assets.Sighting{AssetID: row.assetID, LastSeen: now}
			factsChanged := latest != nil && string(latestHash) != string(row.factsHash)
			if factsChanged {
				ips, macs := latest.Addresses()
				s.Host = &assets.Host{Name: latest.Hostname, OS: latest.OS, Platform: latest.Platform, Addresses: ips, MACs: macs}
				claims[row.assetID] = macs
			}
			if len(d.obs) > 0 || d.dropped > 0 {
				toObserve = append(toObserve, d)
			}
			sightings = append(sightings, s)
			u.add(id, last, firstApplied, applied, queue, latest, hash, factsChanged)
		}

		// Timeline entries name what changed, against the stored facts.
		if len(changedAgents) > 0 {
			old, err := storedFacts(ctx, tx, changedAgents)
			if err != nil {
				return err
			}
			var prev *Facts
			for _, c := range changes {
				if c.isBase {
					prev = old[c.agent]
					continue
				}
				fields := c.facts.Changed(prev)
				if prev != nil && len(fields) > 0 {
					timeline = append(timeline, assets.TimelineEntry{AssetID: c.asset, At: c.at, Kind: assets.KindFactsChanged,
						Summary: "changed: " + strings.Join(fields, ", "), Details: map[string]any{"agent_id": c.agent.String(), "seq": c.seq, "changed": fields}})
				}
				prev = c.facts
			}
		}
		if err := u.exec(ctx, tx); err != nil {
			return err
		}
		if err := in.cfg.Assets.Seen(ctx, tx, sightings); err != nil {
			return err
		}
		if err := in.cfg.Assets.Record(ctx, tx, tenant, timeline); err != nil {
			return err
		}
		// Discovery and commands, in the same transaction as the reports
		// that carried them: what was acknowledged is applied.
		if in.cfg.Discovery != nil {
			for asset, macs := range claims {
				if err := in.cfg.Discovery.ClaimHost(ctx, tx, tenant, asset, macs); err != nil {
					return err
				}
			}
			for _, d := range toObserve {
				// What the observations cause (alerts, evidence) is the agent's doing.
				actx := audit.WithActor(ctx, audit.Actor{Type: audit.ActorAgent, ID: d.col.AgentID.String(), Name: work[d.col.AgentID].hostname})
				if err := in.cfg.Discovery.Observe(actx, tx, tenant, d.col, d.obs, d.dropped); err != nil {
					return err
				}
			}
			var cols []discovery.Collector
			for _, id := range ids {
				if row, ok := rows[id]; ok && !row.revoked {
					cols = append(cols, discovery.Collector{AgentID: id, SiteID: row.siteID})
				}
			}
			if agentPolicies, err = in.cfg.Discovery.PoliciesFor(ctx, tx, cols); err != nil {
				return err
			}
		}
		if err := completeCommands(ctx, tx, tenant, results); err != nil {
			return err
		}
		var live []uuid.UUID
		for _, id := range takers {
			if row, ok := rows[id]; ok && !row.revoked {
				live = append(live, id)
			}
		}
		delivered, err = deliverCommands(ctx, tx, live)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ingest heartbeats: %w", err)
	}

	results := make([]jobResult, len(jobs))
	for i, j := range jobs {
		row, ok := rows[j.id.AgentID]
		switch {
		case !ok:
			results[i].err = idErr(CodeCertInvalid, "agent %s is not known", j.id.AgentID)
			continue
		case row.revoked:
			results[i].err = idErr(CodeAgentRevoked, "agent %s was revoked; enrolling this machine again needs a new enrollment token", j.id.AgentID)
			continue
		}
		last := newLast[j.id.AgentID]
		ack := Ack{Interval: time.Duration(row.interval) * time.Second}
		for _, rep := range j.reports {
			if int64(rep.Seq) <= last {
				ack.Seqs = append(ack.Seqs, rep.Seq)
				if int64(rep.Seq) <= row.lastSeq {
					ack.Duplicates++
				}
			}
		}
		ack.Policy = agentPolicies[j.id.AgentID]
		if j.commands {
			ack.Commands = delivered[j.id.AgentID]
			delete(delivered, j.id.AgentID) // one call gets each command
		}
		results[i].ack = ack
		in.cfg.Metrics.report("duplicate", ack.Duplicates)
		in.cfg.Metrics.report("applied", len(ack.Seqs)-ack.Duplicates)
	}
	return results, nil
}

// truncateTimes cuts the agent's timestamps to the microseconds PostgreSQL
// keeps, so that evidence and responses built from a report say the same
// instant as the rows read back later.
func (r *Report) truncateTimes() {
	r.At = r.At.Truncate(time.Microsecond)
	for i := range r.Observations {
		r.Observations[i].SeenAt = r.Observations[i].SeenAt.Truncate(time.Microsecond)
	}
	for i := range r.CommandResults {
		r.CommandResults[i].CompletedAt = r.CommandResults[i].CompletedAt.Truncate(time.Microsecond)
	}
	if r.Facts != nil && r.Facts.BootTime != nil {
		t := r.Facts.BootTime.Truncate(time.Microsecond)
		r.Facts.BootTime = &t
	}
}

func (r *Report) factsHash() []byte {
	if r.FactsHash == nil && r.Facts != nil {
		r.FactsHash = r.Facts.Hash()
	}
	return r.FactsHash
}

func storedFacts(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) (map[uuid.UUID]*Facts, error) {
	rows, err := tx.Query(ctx, `SELECT id, facts FROM agents WHERE id = ANY($1)`, db.UUIDs(ids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uuid.UUID]*Facts{}
	for rows.Next() {
		var id uuid.UUID
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			return nil, err
		}
		var f Facts
		if json.Unmarshal(raw, &f) == nil && f.MachineID != "" {
			out[id] = &f
		}
	}
	return out, rows.Err()
}

// agentUpdate is one multi-row UPDATE of agents.
type agentUpdate struct {
	ids                                                   []uuid.UUID
	lastSeq, firstSeq, applied, depth, dropped, unqueued  []int64
	errKind                                               []*string
	errAt, failingSince                                   []*time.Time
	hasQueue, changed                                     []bool
	facts                                                 []string
	hashes                                                [][]byte
	hostname, os, platform, platformVersion, kernel, arch []string
	agentVersion                                          []string
}

func newAgentUpdate(n int) *agentUpdate {
	return &agentUpdate{ids: make([]uuid.UUID, 0, n)}
}

func (u *agentUpdate) add(id uuid.UUID, last, first, applied int64, q *QueueStats, f *Facts, hash []byte, changed bool) {
	u.ids = append(u.ids, id)
	u.lastSeq = append(u.lastSeq, last)
	u.firstSeq = append(u.firstSeq, first)
	u.applied = append(u.applied, applied)
	var depth, dropped, unqueued int64
	var kind *string
	var errAt, failingSince *time.Time
	if q != nil {
		depth, dropped, unqueued = q.Depth, q.Dropped, q.Unqueued
		if q.LastErrorAt != nil && q.LastErrorKind != "" {
			kind, errAt = &q.LastErrorKind, q.LastErrorAt
		}
		failingSince = q.FailingSince
	}
	u.depth, u.dropped, u.hasQueue = append(u.depth, depth), append(u.dropped, dropped), append(u.hasQueue, q != nil)
	u.unqueued, u.errKind = append(u.unqueued, unqueued), append(u.errKind, kind)
	u.errAt, u.failingSince = append(u.errAt, errAt), append(u.failingSince, failingSince)
	u.changed = append(u.changed, changed)
	doc := "{}"
	var fc Facts
	if changed {
		b, _ := json.Marshal(f)
		doc, fc = string(b), *f
	}
	u.facts, u.hashes = append(u.facts, doc), append(u.hashes, hash)
	u.hostname, u.os, u.platform = append(u.hostname, fc.Hostname), append(u.os, fc.OS), append(u.platform, fc.Platform)
	u.platformVersion, u.kernel, u.arch = append(u.platformVersion, fc.PlatformVersion), append(u.kernel, fc.KernelVersion), append(u.arch, fc.Arch)
	u.agentVersion = append(u.agentVersion, fc.AgentVersion)
}

func (u *agentUpdate) exec(ctx context.Context, tx pgx.Tx) error {
	if len(u.ids) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		UPDATE agents a SET
		       last_seq = v.last_seq,
		       reports_applied = a.reports_applied + v.applied,
		       first_seq = CASE WHEN a.first_seq = 0 THEN v.first_seq ELSE a.first_seq END,
		       last_seen_at = now(),
		       queue_depth = CASE WHEN v.has_queue THEN v.depth ELSE a.queue_depth END,
		       queue_dropped = CASE WHEN v.has_queue THEN v.dropped ELSE a.queue_dropped END,
		       queue_unqueued = CASE WHEN v.has_queue THEN v.unqueued ELSE a.queue_unqueued END,
		       -- The last failure is history: an agent that reports none
		       -- (an older agent, a new queue file) does not erase it.
		       queue_error_kind = CASE WHEN v.has_queue AND v.error_at IS NOT NULL THEN v.error_kind ELSE a.queue_error_kind END,
		       queue_error_at = CASE WHEN v.has_queue AND v.error_at IS NOT NULL THEN v.error_at ELSE a.queue_error_at END,
		       queue_failing_since = CASE WHEN v.has_queue THEN v.failing_since ELSE a.queue_failing_since END,
		       facts = CASE WHEN v.changed THEN v.facts ELSE a.facts END,
		       facts_hash = CASE WHEN v.changed THEN v.hash ELSE a.facts_hash END,
		       hostname = CASE WHEN v.changed AND v.hostname <> '' THEN v.hostname ELSE a.hostname END,
		       os = CASE WHEN v.changed THEN v.os ELSE a.os END,
		       platform = CASE WHEN v.changed THEN v.platform ELSE a.platform END,
		       platform_version = CASE WHEN v.changed THEN v.platform_version ELSE a.platform_version END,
		       kernel_version = CASE WHEN v.changed THEN v.kernel ELSE a.kernel_version END,
		       arch = CASE WHEN v.changed THEN v.arch ELSE a.arch END,
		       agent_version = CASE WHEN v.changed THEN v.agent_version ELSE a.agent_version END
		  FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bool[], $6::bool[], $7::jsonb[], $8::bytea[],
		              $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[], $17::bigint[],
		              $18::bigint[], $19::text[], $20::timestamptz[], $21::timestamptz[])
		       AS v(id, last_seq, depth, dropped, has_queue, changed, facts, hash, hostname, os, platform, platform_version, kernel, arch, agent_version, applied, first_seq,
		            unqueued, error_kind, error_at, failing_since)
		 WHERE a.id = v.id`,
		db.UUIDs(u.ids), u.lastSeq, u.depth, u.dropped, u.hasQueue, u.changed, u.facts, u.hashes,
		u.hostname, u.os, u.platform, u.platformVersion, u.kernel, u.arch, u.agentVersion, u.applied, u.firstSeq,
		u.unqueued, u.errKind, u.errAt, u.failingSince)
	if err != nil {
		return fmt.Errorf("update agents: %w", err)
	}
	return nil
}

// ErrIngestStopped means the server is shutting down.
var ErrIngestStopped = errors.New("the control plane is shutting down")
