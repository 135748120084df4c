package compliance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// Framework is a catalog framework with its control count.
type Framework struct {
	ID, Name, Version, Publisher, URL, License string
	Controls                                   int
}

// CatalogVersion is the version of the catalog the database holds.
func CatalogVersion(ctx context.Context, tx pgx.Tx) (string, error) {
	var v string
	err := tx.QueryRow(ctx, `SELECT version FROM compliance_catalog`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// Frameworks lists the catalog's frameworks.
func Frameworks(ctx context.Context, tx pgx.Tx) ([]Framework, error) {
	rows, err := tx.Query(ctx, `SELECT f.id, f.name, f.version, f.publisher, f.url, f.license,
		(SELECT count(*) FROM compliance_controls c WHERE c.framework_id = f.id) FROM compliance_frameworks f ORDER BY f.id`)
	if err != nil {
		return nil, fmt.Errorf("list frameworks: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Framework, error) {
		var f Framework
		return f, r.Scan(&f.ID, &f.Name, &f.Version, &f.Publisher, &f.URL, &f.License, &f.Controls)
	})
}

// Status is a tenant's status of one control.
type Status struct {
	Status        string
	Evaluator     *string
	Reason        *string
	EvaluatedAt   *time.Time
	ChangedAt     *time.Time
	Justification *string
}

// Control is a catalog control with the tenant's status.
type Control struct {
	ID, Framework, Key, Label, Title, Family, FamilyTitle string
	ParentID                                              *string
	Withdrawn                                             bool
	Baselines                                             []string
	URL                                                   string
	Sort                                                  int
	Status                                                Status
}

const controlColumns = `c.id, c.framework_id, c.key, c.label, c.title, c.family, coalesce(f.title, ''), c.parent_id, c.withdrawn,
	c.baselines, c.url, c.sort, coalesce(s.status, 'unknown'), s.evaluator, s.reason, s.evaluated_at, s.changed_at, s.justification`

const controlFrom = ` FROM compliance_controls c
	LEFT JOIN compliance_families f ON f.framework_id = c.framework_id AND f.id = c.family
	LEFT JOIN control_status s ON s.control_id = c.id`

func scanControl(row pgx.Row) (Control, error) {
	var c Control
	err := row.Scan(&c.ID, &c.Framework, &c.Key, &c.Label, &c.Title, &c.Family, &c.FamilyTitle, &c.ParentID, &c.Withdrawn,
		&c.Baselines, &c.URL, &c.Sort, &c.Status.Status, &c.Status.Evaluator, &c.Status.Reason, &c.Status.EvaluatedAt,
		&c.Status.ChangedAt, &c.Status.Justification)
	return c, err
}

// Filter selects controls.
type Filter struct {
	Framework, Family, Status, Query string
	// After is the position to continue from: framework and sort.
	AfterFramework string
	AfterSort      int
	Limit          int
}

// Controls lists controls in catalog order, one more than Limit. The status
// join is the transaction tenant's alone (row-level security).
func Controls(ctx context.Context, tx pgx.Tx, f Filter) ([]Control, error) {
	q := `SELECT ` + controlColumns + controlFrom + ` WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.Framework != "" {
		q += " AND c.framework_id = " + arg(f.Framework)
	}
	if f.Family != "" {
		q += " AND upper(c.family) = upper(" + arg(f.Family) + ")"
	}
	if f.Status != "" {
		q += " AND coalesce(s.status, 'unknown') = " + arg(f.Status)
	}
	if t := strings.TrimSpace(f.Query); t != "" {
		p := arg("%" + escapeLike(t) + "%")
		q += " AND (c.label ILIKE " + p + " OR c.title ILIKE " + p + " OR c.key ILIKE " + p + ")"
	}
	if f.AfterFramework != "" {
		q += " AND (c.framework_id, c.sort) > (" + arg(f.AfterFramework) + ", " + arg(f.AfterSort) + ")"
	}
	q += " ORDER BY c.framework_id, c.sort LIMIT " + arg(f.Limit+1)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list controls: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Control, error) { return scanControl(r) })
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// ResolveControl turns a control as people write it into its id: the id
// itself in any case (NIST-800-53-R5:IA-3), an enhancement in parentheses
// (nist-800-53-r5:cm-8(3) for nist-800-53-r5:cm-8.3), or the control
// alone (IA-3, CM-8(3), 1.2) when exactly one framework has it.
func ResolveControl(ctx context.Context, tx pgx.Tx, ref string) (string, error) {
	norm := normalizeControl(ref)
	q := `SELECT id FROM compliance_controls WHERE id = $1`
	if !strings.Contains(norm, ":") {
		q = `SELECT id FROM compliance_controls WHERE lower(key) = $1 ORDER BY id LIMIT 10`
	}
	rows, err := tx.Query(ctx, q, norm)
	if err != nil {
		return "", fmt.Errorf("resolve control: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("resolve control: %w", err)
	}
	return pickControl(ref, ids)
}

// normalizeControl writes a control reference the way ids are written:
// lower case, no spaces, enhancements after a dot.
func normalizeControl(ref string) string {
	return strings.NewReplacer(" ", "", "(", ".", ")", "").Replace(strings.ToLower(strings.TrimSpace(ref)))
}

// controlForm says how to name a control, for the errors that need it.
const controlForm = "name a control as framework:control, such as nist-800-53-r5:ia-3, nist-800-53-r5:cm-8.3 or cis-v8:1.2, " +
	"or by the control alone when one framework has it (IA-3); GET /api/v1/compliance/controls?q= finds them"

// pickControl is the id that ref resolved to among ids.
func pickControl(ref string, ids []string) (string, error) {
	switch len(ids) {
	case 1:
		return ids[0], nil
	case 0:
		return "", problem.Newf(http.StatusNotFound, problem.CodeNotFound, "no control %q: %s", ref, controlForm)
	}
	p := problem.Newf(http.StatusBadRequest, problem.CodeInvalidParameter, "%q names a control in several frameworks (%s): %s",
		ref, strings.Join(ids, ", "), controlForm)
	p.Errors = []problem.Field{{Parameter: "control_id", Detail: "one of " + strings.Join(ids, ", ")}}
	return "", p
}

// GetControl reads one control with the tenant's status.
func GetControl(ctx context.Context, tx pgx.Tx, id string) (Control, error) {
	c, err := scanControl(tx.QueryRow(ctx, `SELECT `+controlColumns+controlFrom+` WHERE c.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Control{}, problem.NotFound("control")
	}
	if err != nil {
		return Control{}, fmt.Errorf("get control: %w", err)
	}
	return c, nil
}

// EvidenceRef is a tenant-safe reference to evidence a status rests on:
// never its content.
type EvidenceRef struct {
	ID        uuid.UUID
	Role      string
	Kind      string
	SHA256    []byte
	CreatedAt time.Time
	LinkedAt  time.Time
}

// maxEvidenceRefs bounds a control's listed evidence: the newest first.
const maxEvidenceRefs = 50

// ControlEvidence lists references to the evidence linked to a control.
func ControlEvidence(ctx context.Context, tx pgx.Tx, id string) ([]EvidenceRef, error) {
	rows, err := tx.Query(ctx, `SELECT e.id, l.role, e.kind, e.content_sha256, e.created_at, l.linked_at
		FROM control_evidence l JOIN evidence e ON e.tenant_id = l.tenant_id AND e.id = l.evidence_id
		WHERE l.control_id = $1 ORDER BY l.linked_at DESC, e.id DESC LIMIT $2`, id, maxEvidenceRefs)
	if err != nil {
		return nil, fmt.Errorf("control evidence: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (EvidenceRef, error) {
		var e EvidenceRef
		return e, r.Scan(&e.ID, &e.Role, &e.Kind, &e.SHA256, &e.CreatedAt, &e.LinkedAt)
	})
}

// Mapping is a control of another framework a published mapping relates.
type Mapping struct {
	ControlID, Framework, Label, Title, Source string
}

// ControlMappings lists the controls mapped to or from id.
func ControlMappings(ctx context.Context, tx pgx.Tx, id string) ([]Mapping, error) {
	rows, err := tx.Query(ctx, `SELECT c.id, c.framework_id, c.label, c.title, m.source FROM (
		SELECT to_id AS other, source FROM compliance_mappings WHERE from_id = $1
		UNION SELECT from_id, source FROM compliance_mappings WHERE to_id = $1) m
		JOIN compliance_controls c ON c.id = m.other ORDER BY c.framework_id, c.sort`, id)
	if err != nil {
		return nil, fmt.Errorf("control mappings: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Mapping, error) {
		var m Mapping
		return m, r.Scan(&m.ControlID, &m.Framework, &m.Label, &m.Title, &m.Source)
	})
}

// MarkNotApplicable records an admin's judgement that a control does not
// apply, with its justification. Evaluators leave it alone until it is
// cleared.
func MarkNotApplicable(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, id, justification string) error {
	justification = strings.TrimSpace(justification)
	if justification == "" {
		return problem.Invalid("say why the control does not apply", problem.Field{Pointer: "#/justification", Detail: "blank"})
	}
	c, err := GetControl(ctx, tx, id)
	if err != nil {
		return err
	}
	if c.Withdrawn {
		return problem.New(http.StatusConflict, "control_withdrawn", "the control is withdrawn from its framework; it has no status to set")
	}
	if _, err := tx.Exec(ctx, `INSERT INTO control_status (tenant_id, control_id, status, evaluator, reason, evaluated_at, justification, changed_at)
		VALUES ($1, $2, 'not_applicable', 'tenant_admin', 'marked not applicable', now(), $3, now())
		ON CONFLICT (tenant_id, control_id) DO UPDATE SET status = 'not_applicable', evaluator = 'tenant_admin',
		reason = 'marked not applicable', evaluated_at = now(), evidence_id = NULL, justification = EXCLUDED.justification,
		changed_at = CASE WHEN control_status.status = 'not_applicable' THEN control_status.changed_at ELSE now() END`,
		tenantID, id, justification); err != nil {
		return fmt.Errorf("mark not applicable: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM control_evidence WHERE control_id = $1 AND role = 'cited'`, id); err != nil {
		return err
	}
	return audit.Record(ctx, tx, tenantID, audit.Entry{Action: "compliance.control_not_applicable", TargetType: "control", TargetID: id,
		Details: map[string]any{"justification": redact.Masked(justification), "previous_status": c.Status.Status}})
}

// ClearNotApplicable makes a control applicable again: unknown until its
// evaluator (if it has one) runs, which the caller triggers.
func ClearNotApplicable(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, id string) error {
	c, err := GetControl(ctx, tx, id)
	if err != nil {
		return err
	}
	if c.Status.Status != StatusNotApplicable {
		return problem.New(http.StatusConflict, "not_marked", "the control is not marked not applicable")
	}
	if _, err := tx.Exec(ctx, `DELETE FROM control_status WHERE control_id = $1`, id); err != nil {
		return fmt.Errorf("clear not applicable: %w", err)
	}
	return audit.Record(ctx, tx, tenantID, audit.Entry{Action: "compliance.control_applicable", TargetType: "control", TargetID: id})
}
