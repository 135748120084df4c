package compliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/etag"
	"github.com/edgeward/edgeward/controlplane/internal/outbox"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

// Baseline is a shipped compliance policy: typed parameters described by a
// JSON Schema, their defaults, and the controls the policy supports.
// Tenants cannot edit a baseline; they fork it into a managed copy.
type Baseline struct {
	ID          string
	Name        string
	Description string
	Schema      string // JSON Schema of the parameters
	Defaults    map[string]any
	Controls    []string

	compiled *jsonschema.Schema
}

// Baselines are the shipped policies.
var Baselines = []*Baseline{
	{
		ID: "unauthorized-device-response", Name: "Unauthorized-device response SLA",
		Description: "How long an unauthorized-device alert may stay unresolved before CM-8(3) and CIS 1.2 fail.",
		Schema: `{"type": "object", "additionalProperties": false, "required": ["sla_hours"],
			"properties": {"sla_hours": {"type": "integer", "minimum": 1, "maximum": 720, "description": "Hours an alert may stay unresolved."}}}`,
		Defaults: map[string]any{"sla_hours": 24},
		Controls: []string{"nist-800-53-r5:cm-8.3", "cis-v8:1.2"},
	},
	{
		ID: "agent-heartbeat-freshness", Name: "Agent heartbeat freshness",
		Description: "How many heartbeat intervals an agent may miss before the inventory (CM-8, CIS 1.1) counts as not current.",
		Schema: `{"type": "object", "additionalProperties": false, "required": ["missed_heartbeats"],
			"properties": {"missed_heartbeats": {"type": "integer", "minimum": 1, "maximum": 1000}}}`,
		Defaults: map[string]any{"missed_heartbeats": 3},
		Controls: []string{"nist-800-53-r5:cm-8", "cis-v8:1.1"},
	},
	{
		ID: "agent-certificate-lifetime", Name: "Agent certificate lifetime",
		Description: "The longest agent client certificate lifetime the tenant accepts: a longer one fails IA-3.",
		Schema: `{"type": "object", "additionalProperties": false, "required": ["max_lifetime_days"],
			"properties": {"max_lifetime_days": {"type": "integer", "minimum": 1, "maximum": 397}}}`,
		Defaults: map[string]any{"max_lifetime_days": 30},
		Controls: []string{"nist-800-53-r5:ia-3"},
	},
	{
		ID: "disk-encryption-required", Name: "Disk encryption required",
		Description: "Endpoints must encrypt their system disks (SC-28, CIS 3.6); checked from device posture.",
		Schema: `{"type": "object", "additionalProperties": false, "required": ["required", "platforms"],
			"properties": {"required": {"type": "boolean"},
			"platforms": {"type": "array", "uniqueItems": true, "minItems": 1, "items": {"enum": ["windows", "macos", "linux"]}}}}`,
		Defaults: map[string]any{"required": true, "platforms": []any{"windows", "macos", "linux"}},
		Controls: []string{"nist-800-53-r5:sc-28", "cis-v8:3.6"},
	},
}

func init() {
	for _, b := range Baselines {
		c := jsonschema.NewCompiler()
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(b.Schema))
		if err == nil {
			err = c.AddResource(b.ID+".json", doc)
		}
		if err == nil {
			b.compiled, err = c.Compile(b.ID + ".json")
		}
		if err == nil {
			err = b.Validate(b.Defaults)
		}
		if err != nil {
			panic(fmt.Sprintf("compliance: baseline %s: %v", b.ID, err)) // shipped data: a programming error
		}
	}
}

// schemaMap is the parameters' JSON Schema as a document.
func (b *Baseline) schemaMap() map[string]any {
	var m map[string]any
	_ = json.Unmarshal([]byte(b.Schema), &m) // checked when compiled at init
	return m
}

// baseline finds a shipped policy.
func baseline(id string) *Baseline {
	for _, b := range Baselines {
		if b.ID == id {
			return b
		}
	}
	return nil
}

// Validate checks parameters against the baseline's schema: a 422 naming
// the first failing field.
func (b *Baseline) Validate(params map[string]any) error {
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	err = b.compiled.Validate(inst)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var fields []problem.Field
	for _, u := range ve.BasicOutput().Errors {
		if u.Error == nil {
			continue
		}
		fields = append(fields, problem.Field{Pointer: "#/parameters" + u.InstanceLocation, Detail: u.Error.String()})
	}
	detail := "the parameters do not match the policy's schema"
	if len(fields) > 0 {
		detail = fields[0].Pointer + ": " + fields[0].Detail
	}
	return problem.Invalid(detail, fields...)
}

// Policy is a tenant's managed copy of a baseline.
type Policy struct {
	ID         uuid.UUID
	BaselineID string
	Name       string
	Parameters map[string]any
	Version    int
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

const policyColumns = `id, baseline_id, name, parameters, version, created_at, updated_at`

func scanPolicy(row pgx.Row) (Policy, error) {
	var p Policy
	err := row.Scan(&p.ID, &p.BaselineID, &p.Name, &p.Parameters, &p.Version, &p.CreatedAt, &p.UpdatedAt)
	return p, err
}

// Policies lists the tenant's managed policies.
func Policies(ctx context.Context, tx pgx.Tx) ([]Policy, error) {
	rows, err := tx.Query(ctx, `SELECT `+policyColumns+` FROM compliance_policies ORDER BY baseline_id`)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Policy, error) { return scanPolicy(r) })
}

// GetPolicy reads a managed policy by id.
func GetPolicy(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Policy, error) {
	return getPolicy(ctx, tx, id, "")
}

func getPolicy(ctx context.Context, tx pgx.Tx, id uuid.UUID, lock string) (Policy, error) {
	p, err := scanPolicy(tx.QueryRow(ctx, `SELECT `+policyColumns+` FROM compliance_policies WHERE id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Policy{}, problem.NotFound("compliance policy")
	}
	if err != nil {
		return Policy{}, fmt.Errorf("get policy: %w", err)
	}
	return p, nil
}

// Fork makes the tenant's managed copy of a baseline, at the baseline's
// defaults. A tenant has one copy per baseline: a second fork is a 409.
func Fork(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, baselineID, name string) (Policy, error) {
	b := baseline(baselineID)
	if b == nil {
		return Policy{}, problem.NotFound("baseline policy")
	}
	if name = strings.TrimSpace(name); name == "" {
		name = b.Name
	}
	id := uuid.Must(uuid.NewV7())
	tag, err := tx.Exec(ctx, `INSERT INTO compliance_policies (tenant_id, id, baseline_id, name, parameters) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant_id, baseline_id) DO NOTHING`, tenantID, id, b.ID, name, b.Defaults)
	if err != nil {
		return Policy{}, fmt.Errorf("fork policy: %w", err)
	}
	if tag.RowsAffected() == 0 {
		var existing uuid.UUID
		_ = tx.QueryRow(ctx, `SELECT id FROM compliance_policies WHERE baseline_id = $1`, b.ID).Scan(&existing)
		return Policy{}, problem.Newf(http.StatusConflict, "already_forked",
			"this tenant already manages a copy of %s: %s; update that one", b.ID, existing)
	}
	p, err := GetPolicy(ctx, tx, id)
	if err != nil {
		return Policy{}, err
	}
	return p, recordChange(ctx, tx, tenantID, p, "forked")
}

// UpdatePolicy sets a managed policy's parameters (and optionally its
// name) after checking If-Match and the baseline's schema.
func UpdatePolicy(ctx context.Context, tx pgx.Tx, tenantID, id uuid.UUID, ifMatch *string, name *string, params map[string]any) (Policy, error) {
	p, err := getPolicy(ctx, tx, id, " FOR UPDATE")
	if err != nil {
		return Policy{}, err
	}
	if err := etag.Check(ifMatch, p.Version); err != nil {
		return Policy{}, err
	}
	if err := baseline(p.BaselineID).Validate(params); err != nil {
		return Policy{}, err
	}
	newName := p.Name
	if name != nil {
		if newName = strings.TrimSpace(*name); newName == "" {
			return Policy{}, problem.Invalid("name must not be blank", problem.Field{Pointer: "#/name", Detail: "blank"})
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE compliance_policies SET name = $2, parameters = $3, version = version + 1, updated_at = now()
		WHERE id = $1`, id, newName, params); err != nil {
		return Policy{}, fmt.Errorf("update policy: %w", err)
	}
	if p, err = GetPolicy(ctx, tx, id); err != nil {
		return Policy{}, err
	}
	return p, recordChange(ctx, tx, tenantID, p, "updated")
}

// recordChange keeps the new version, audits it and tells the outbox
// (policy.forked, policy.updated), which also re-evaluates the controls.
func recordChange(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, p Policy, change string) error {
	actor := audit.ActorFrom(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO compliance_policy_versions (tenant_id, policy_id, version, change, name, parameters, changed_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, tenantID, p.ID, p.Version, change, p.Name, p.Parameters, actor.Name); err != nil {
		return fmt.Errorf("record policy version: %w", err)
	}
	details := map[string]any{"baseline_id": p.BaselineID, "version": p.Version, "parameters": p.Parameters}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "policy." + change, TargetType: "compliance_policy",
		TargetID: p.ID.String(), Details: details}); err != nil {
		return err
	}
	return outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: "policy." + change, AggregateType: "compliance_policy",
		AggregateID: p.ID, Payload: map[string]any{"policy_id": p.ID, "baseline_id": p.BaselineID, "version": p.Version, "parameters": p.Parameters}})
}

// PolicyVersion is one kept version of a managed policy.
type PolicyVersion struct {
	PolicyID   uuid.UUID
	Version    int
	Change     string
	Name       string
	Parameters map[string]any
	ChangedAt  time.Time
	ChangedBy  string
}

// PolicyVersions lists a managed policy's versions oldest first after the
// given one, one more than limit.
func PolicyVersions(ctx context.Context, tx pgx.Tx, id uuid.UUID, after, limit int) ([]PolicyVersion, error) {
	if _, err := GetPolicy(ctx, tx, id); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT policy_id, version, change, name, parameters, changed_at, changed_by FROM compliance_policy_versions
		WHERE policy_id = $1 AND version > $2 ORDER BY version LIMIT $3`, id, after, limit+1)
	if err != nil {
		return nil, fmt.Errorf("list policy versions: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PolicyVersion, error) {
		var v PolicyVersion
		return v, r.Scan(&v.PolicyID, &v.Version, &v.Change, &v.Name, &v.Parameters, &v.ChangedAt, &v.ChangedBy)
	})
}

// LoadParams reads the evaluator settings of the transaction's tenant: its
// managed policies where it has them, the baselines' defaults elsewhere.
func LoadParams(ctx context.Context, tx pgx.Tx) (Params, error) {
	p := DefaultParams
	list, err := Policies(ctx, tx)
	if err != nil {
		return p, err
	}
	for _, pol := range list {
		switch pol.BaselineID {
		case "unauthorized-device-response":
			if h, ok := pol.Parameters["sla_hours"].(float64); ok {
				p.UnauthorizedSLA = time.Duration(h) * time.Hour
			}
		case "agent-heartbeat-freshness":
			if n, ok := pol.Parameters["missed_heartbeats"].(float64); ok {
				p.MissedHeartbeats = int(n)
			}
		case "agent-certificate-lifetime":
			if d, ok := pol.Parameters["max_lifetime_days"].(float64); ok {
				p.MaxCertLifetime = time.Duration(d) * 24 * time.Hour
			}
		}
	}
	return p, nil
}
