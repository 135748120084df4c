// Package tickets is a tenant's internal ticketing: tickets numbered per
// tenant (#1, #2, ...), their comments, and their links to alerts, assets,
// other tickets and URLs. Every change writes its audit event, and a
// ticket.created or ticket.updated domain event, in the transaction of the
// change.
package tickets

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/alerts"
	"github.com/edgeward/edgeward/controlplane/internal/audit"
	"github.com/edgeward/edgeward/controlplane/internal/etag"
	"github.com/edgeward/edgeward/controlplane/internal/outbox"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// Ticket states.
const (
	StatusOpen       = "open"
	StatusInProgress = "in_progress"
	StatusResolved   = "resolved"
	StatusClosed     = "closed"
)

// Ticket priorities.
const (
	PriorityLow    = "low"
	PriorityMedium = "medium"
	PriorityHigh   = "high"
	PriorityUrgent = "urgent"
)

// Link types: the first three name a row of this tenant by target id.
const (
	LinkAlert  = "alert"
	LinkAsset  = "asset"
	LinkTicket = "ticket"
	LinkURL    = "url"
)

// Domain event types published to the outbox.
const (
	EventCreated = "ticket.created"
	EventUpdated = "ticket.updated"
)

// CodeInvalidTransition is the problem code of a status change the
// workflow does not allow.
const CodeInvalidTransition = "invalid_transition"

// MaxTitleLength bounds a title in characters (the column's CHECK).
const MaxTitleLength = 200

// transitions lists where each status may move. Closed is final.
var transitions = map[string][]string{
	StatusOpen:       {StatusInProgress, StatusResolved, StatusClosed},
	StatusInProgress: {StatusOpen, StatusResolved},
	StatusResolved:   {StatusInProgress, StatusClosed},
	StatusClosed:     {},
}

// CanMove reports whether a ticket may go from one status to another.
// Staying in the same status is always allowed; it changes nothing.
func CanMove(from, to string) bool {
	if from == to {
		return true
	}
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Ticket is one ticket with the ids of the alerts it links to.
type Ticket struct {
	ID          uuid.UUID
	Number      int64
	Title       string
	Description string
	Status      string
	Priority    string
	AssigneeID  *uuid.UUID
	CreatedBy   *uuid.UUID
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Version     int
	AlertIDs    []uuid.UUID
}

// Spec describes a ticket to open. Empty Priority means medium.
type Spec struct {
	Title       string
	Description string
	Priority    string
	AssigneeID  *uuid.UUID
	CreatedBy   *uuid.UUID
}

// Patch is a change to a ticket; nil fields stay as they are.
type Patch struct {
	Title       *string
	Description *string
	Status      *string
	Priority    *string
	AssigneeID  *uuid.UUID
	// Unassign removes the assignee (the body said "assignee_id": null).
	Unassign bool
}

// Comment is one comment on a ticket.
type Comment struct {
	ID         uuid.UUID
	Body       string
	AuthorID   uuid.UUID
	AuthorName string
	CreatedAt  time.Time
}

// Link ties a ticket to an alert, asset or ticket (TargetID) or a URL.
type Link struct {
	ID        uuid.UUID
	Type      string
	TargetID  *uuid.UUID
	URL       *string
	CreatedAt time.Time
}

// LinkSpec describes a link to add.
type LinkSpec struct {
	Type     string
	TargetID *uuid.UUID
	URL      *string
}

// Filter selects tickets for List.
type Filter struct {
	Status     string
	Priority   string
	AssigneeID *uuid.UUID
	BeforeID   *uuid.UUID // the cursor: ids are UUIDv7, so id order is creation order
	Limit      int
}

// ticketColumns reads a ticket and, from its links, the alerts it names.
const ticketColumns = `t.id, t.number, t.title, t.description, t.status, t.priority, t.assignee_id, t.created_by,
	t.created_at, t.updated_at, t.version,
	ARRAY(SELECT l.target_id FROM ticket_links l
	       WHERE l.tenant_id = t.tenant_id AND l.ticket_id = t.id AND l.type = 'alert' ORDER BY l.id)`

func scanTicket(row pgx.Row) (Ticket, error) {
	var t Ticket
	err := row.Scan(&t.ID, &t.Number, &t.Title, &t.Description, &t.Status, &t.Priority, &t.AssigneeID, &t.CreatedBy,
		&t.CreatedAt, &t.UpdatedAt, &t.Version, &t.AlertIDs)
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	if t.AlertIDs == nil {
		t.AlertIDs = []uuid.UUID{}
	}
	return t, err
}

// Get returns one ticket of the transaction's tenant, or a 404 problem.
func Get(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Ticket, error) {
	return get(ctx, tx, id, "")
}

func get(ctx context.Context, tx pgx.Tx, id uuid.UUID, lock string) (Ticket, error) {
	t, err := scanTicket(tx.QueryRow(ctx, `SELECT `+ticketColumns+` FROM tickets t WHERE t.id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Ticket{}, problem.NotFound("ticket")
	}
	if err != nil {
		return Ticket{}, fmt.Errorf("get ticket: %w", err)
	}
	return t, nil
}

// List lists the transaction tenant's tickets, newest first, fetching one
// more than Limit.
func List(ctx context.Context, tx pgx.Tx, f Filter) ([]Ticket, error) {
	q := `SELECT ` + ticketColumns + ` FROM tickets t WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.Status != "" {
		q += " AND t.status = " + arg(f.Status)
	}
	if f.Priority != "" {
		q += " AND t.priority = " + arg(f.Priority)
	}
	if f.AssigneeID != nil {
		q += " AND t.assignee_id = " + arg(*f.AssigneeID)
	}
	if f.BeforeID != nil {
		q += " AND t.id < " + arg(*f.BeforeID)
	}
	q += " ORDER BY t.id DESC LIMIT " + arg(f.Limit+1)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tickets: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Ticket, error) { return scanTicket(r) })
	if err != nil {
		return nil, fmt.Errorf("list tickets: %w", err)
	}
	return list, nil
}

// checkAssignee refuses an assignee that is not an enabled principal of the
// transaction's tenant; other tenants' principals look absent.
func checkAssignee(ctx context.Context, tx pgx.Tx, id *uuid.UUID) error {
	if id == nil {
		return nil
	}
	var disabled *time.Time
	err := tx.QueryRow(ctx, `SELECT disabled_at FROM principals WHERE id = $1`, *id).Scan(&disabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return problem.Invalid("no such assignee", problem.Field{Pointer: "#/assignee_id", Detail: "no principal with that id in this tenant"})
	}
	if err != nil {
		return fmt.Errorf("read assignee: %w", err)
	}
	if disabled != nil {
		return problem.Invalid("the assignee is disabled", problem.Field{Pointer: "#/assignee_id", Detail: "principal is disabled"})
	}
	return nil
}

// insert validates spec and adds the ticket with the tenant's next number.
// It neither audits nor publishes: the caller does, once the ticket is
// complete.
func insert(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, spec Spec) (Ticket, error) {
	if spec.Priority == "" {
		spec.Priority = PriorityMedium
	}
	if err := checkAssignee(ctx, tx, spec.AssigneeID); err != nil {
		return Ticket{}, err
	}
	t := Ticket{
		ID: uuid.Must(uuid.NewV7()), Title: spec.Title, Description: spec.Description, Status: StatusOpen,
		Priority: spec.Priority, AssigneeID: spec.AssigneeID, CreatedBy: spec.CreatedBy, Version: 1, AlertIDs: []uuid.UUID{},
	}
	// The counter row serializes this tenant's ticket creation until commit,
	// and rolls back with a failed creation, so numbers have no gaps.
	if err := tx.QueryRow(ctx, `
		INSERT INTO ticket_counters (tenant_id, last_number) VALUES ($1, 1)
		ON CONFLICT (tenant_id) DO UPDATE SET last_number = ticket_counters.last_number + 1
		RETURNING last_number`, tenantID).Scan(&t.Number); err != nil {
		return Ticket{}, fmt.Errorf("next ticket number: %w", err)
	}
	if err := tx.QueryRow(ctx, `
		INSERT INTO tickets (tenant_id, id, number, title, description, status, priority, assignee_id, created_by, created_at, updated_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now(), 1) RETURNING created_at, updated_at`,
		tenantID, t.ID, t.Number, t.Title, t.Description, t.Status, t.Priority, t.AssigneeID, t.CreatedBy).Scan(&t.CreatedAt, &t.UpdatedAt); err != nil {
		return Ticket{}, fmt.Errorf("insert ticket: %w", err)
	}
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return t, nil
}

// recordCreated audits and announces a new ticket.
func recordCreated(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, t Ticket, extra map[string]any) error {
	details := t.facts()
	// Audit events read alike for every role, so the title (a ticket
	// opened from an alert names the device) is kept masked there.
	details["title"] = redact.Masked(t.Title)
	for k, v := range extra {
		details[k] = v
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "ticket.created", TargetType: "ticket", TargetID: t.ID.String(), Details: details}); err != nil {
		return err
	}
	return outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: EventCreated, AggregateType: "ticket", AggregateID: t.ID, Payload: t.facts()})
}

// Create opens a ticket in the transaction's tenant.
func Create(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, spec Spec) (Ticket, error) {
	t, err := insert(ctx, tx, tenantID, spec)
	if err != nil {
		return Ticket{}, err
	}
	if err := recordCreated(ctx, tx, tenantID, t, nil); err != nil {
		return Ticket{}, err
	}
	return t, nil
}

// Update applies p to a ticket whose current ETag ifMatch names. A patch
// that changes nothing returns the ticket as it is, at the same version.
func Update(ctx context.Context, tx pgx.Tx, tenantID, id uuid.UUID, ifMatch *string, p Patch) (Ticket, error) {
	cur, err := get(ctx, tx, id, " FOR UPDATE OF t")
	if err != nil {
		return Ticket{}, err
	}
	if err := etag.Check(ifMatch, cur.Version); err != nil {
		return Ticket{}, err
	}
	next := cur
	changes := map[string]any{}
	change := func(field string, from, to any) { changes[field] = map[string]any{"from": from, "to": to} }
	if p.Status != nil && *p.Status != cur.Status {
		if !CanMove(cur.Status, *p.Status) {
			pr := problem.Newf(http.StatusConflict, CodeInvalidTransition, "a ticket cannot move from %s to %s", cur.Status, *p.Status)
			pr.Errors = []problem.Field{{Pointer: "#/status", Detail: fmt.Sprintf("from %s a ticket may move to: %s", cur.Status, allowedFrom(cur.Status))}}
			return Ticket{}, pr
		}
		next.Status = *p.Status
		change("status", cur.Status, next.Status)
	}
	if p.Title != nil && *p.Title != cur.Title {
		next.Title = *p.Title
		change("title", redact.Masked(cur.Title), redact.Masked(next.Title))
	}
	if p.Description != nil && *p.Description != cur.Description {
		next.Description = *p.Description
		// The text itself stays out of the audit trail; its size says enough.
		change("description_length", utf8.RuneCountInString(cur.Description), utf8.RuneCountInString(next.Description))
	}
	if p.Priority != nil && *p.Priority != cur.Priority {
		next.Priority = *p.Priority
		change("priority", cur.Priority, next.Priority)
	}
	switch {
	case p.Unassign && cur.AssigneeID != nil:
		next.AssigneeID = nil
		change("assignee_id", optionalID(cur.AssigneeID), nil)
	case p.AssigneeID != nil && (cur.AssigneeID == nil || *cur.AssigneeID != *p.AssigneeID):
		if err := checkAssignee(ctx, tx, p.AssigneeID); err != nil {
			return Ticket{}, err
		}
		next.AssigneeID = p.AssigneeID
		change("assignee_id", optionalID(cur.AssigneeID), optionalID(next.AssigneeID))
	}
	if len(changes) == 0 {
		return cur, nil
	}
	if err := tx.QueryRow(ctx, `
		UPDATE tickets SET title = $2, description = $3, status = $4, priority = $5, assignee_id = $6,
		       updated_at = now(), version = version + 1
		 WHERE id = $1 RETURNING updated_at, version`,
		id, next.Title, next.Description, next.Status, next.Priority, next.AssigneeID).Scan(&next.UpdatedAt, &next.Version); err != nil {
		return Ticket{}, fmt.Errorf("update ticket: %w", err)
	}
	next.UpdatedAt = next.UpdatedAt.UTC()
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "ticket.updated", TargetType: "ticket", TargetID: id.String(),
		Details: map[string]any{"number": next.Number, "version": next.Version, "changes": changes}}); err != nil {
		return Ticket{}, err
	}
	if err := outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: EventUpdated, AggregateType: "ticket", AggregateID: id, Payload: next.facts()}); err != nil {
		return Ticket{}, err
	}
	return next, nil
}

func allowedFrom(status string) string {
	if len(transitions[status]) == 0 {
		return "nothing (" + status + " is final)"
	}
	return strings.Join(transitions[status], ", ")
}

// AddComment adds a comment by the given principal to a ticket.
func AddComment(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID, body string, authorID uuid.UUID, authorName string) (Comment, error) {
	t, err := Get(ctx, tx, ticketID)
	if err != nil {
		return Comment{}, err
	}
	c := Comment{ID: uuid.Must(uuid.NewV7()), Body: body, AuthorID: authorID, AuthorName: authorName}
	if err := tx.QueryRow(ctx, `
		INSERT INTO ticket_comments (tenant_id, id, ticket_id, body, author_id, author_name)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at`,
		tenantID, c.ID, ticketID, c.Body, c.AuthorID, c.AuthorName).Scan(&c.CreatedAt); err != nil {
		return Comment{}, fmt.Errorf("insert ticket comment: %w", err)
	}
	c.CreatedAt = c.CreatedAt.UTC()
	// The body stays out of the audit trail: comments may quote anything.
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "ticket.commented", TargetType: "ticket", TargetID: ticketID.String(),
		Details: map[string]any{"number": t.Number, "comment_id": c.ID.String()}}); err != nil {
		return Comment{}, err
	}
	return c, nil
}

// ListComments lists a ticket's comments oldest first, after the comment
// afterID when given, fetching one more than limit.
func ListComments(ctx context.Context, tx pgx.Tx, ticketID uuid.UUID, afterID *uuid.UUID, limit int) ([]Comment, error) {
	if _, err := Get(ctx, tx, ticketID); err != nil {
		return nil, err
	}
	q := `SELECT id, body, author_id, author_name, created_at FROM ticket_comments WHERE ticket_id = $1`
	args := []any{ticketID}
	if afterID != nil {
		args = append(args, *afterID)
		q += fmt.Sprintf(" AND id > $%d", len(args))
	}
	args = append(args, limit+1)
	q += fmt.Sprintf(" ORDER BY id LIMIT $%d", len(args))
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list ticket comments: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Comment, error) {
		var c Comment
		err := r.Scan(&c.ID, &c.Body, &c.AuthorID, &c.AuthorName, &c.CreatedAt)
		c.CreatedAt = c.CreatedAt.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("list ticket comments: %w", err)
	}
	return list, nil
}

// checkLinkSpec enforces the shape of a link: a target id for alert, asset
// and ticket links, an http(s) URL for url links, never both.
func checkLinkSpec(ticketID uuid.UUID, s LinkSpec) error {
	switch s.Type {
	case LinkURL:
		if s.TargetID != nil {
			return problem.Invalid("a url link has no target_id", problem.Field{Pointer: "#/target_id", Detail: "not allowed for type url"})
		}
		if s.URL == nil {
			return problem.Invalid("a url link needs a url", problem.Field{Pointer: "#/url", Detail: "required for type url"})
		}
		if err := checkURL(*s.URL); err != nil {
			return problem.Invalid("the url is not an http(s) URL", problem.Field{Pointer: "#/url", Detail: err.Error()})
		}
	case LinkAlert, LinkAsset, LinkTicket:
		if s.URL != nil {
			return problem.Invalid("only url links have a url", problem.Field{Pointer: "#/url", Detail: "not allowed for type " + s.Type})
		}
		if s.TargetID == nil {
			return problem.Invalid("the link needs a target_id", problem.Field{Pointer: "#/target_id", Detail: "required for type " + s.Type})
		}
		if s.Type == LinkTicket && *s.TargetID == ticketID {
			return problem.Invalid("a ticket cannot link to itself", problem.Field{Pointer: "#/target_id", Detail: "names this ticket"})
		}
	default:
		return problem.Invalid("unknown link type", problem.Field{Pointer: "#/type", Detail: "must be one of alert, asset, ticket, url"})
	}
	return nil
}

func checkURL(s string) error {
	if strings.TrimSpace(s) != s || strings.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return errors.New("must not contain spaces or control characters")
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an absolute http or https URL")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("must name a host")
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	return nil
}

// targetExists reports whether the row a link names exists in the
// transaction's tenant; another tenant's rows look absent.
func targetExists(ctx context.Context, tx pgx.Tx, linkType string, id uuid.UUID) (bool, error) {
	var q string
	switch linkType {
	case LinkAlert:
		q = `SELECT EXISTS (SELECT 1 FROM alerts WHERE id = $1)`
	case LinkAsset:
		q = `SELECT EXISTS (SELECT 1 FROM assets WHERE id = $1)`
	case LinkTicket:
		q = `SELECT EXISTS (SELECT 1 FROM tickets WHERE id = $1)`
	default:
		return false, fmt.Errorf("link type %q has no target", linkType)
	}
	var ok bool
	if err := tx.QueryRow(ctx, q, id).Scan(&ok); err != nil {
		return false, fmt.Errorf("find %s: %w", linkType, err)
	}
	return ok, nil
}

// insertLink adds a link to the ticket; an identical link is a 409.
func insertLink(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID, s LinkSpec) (Link, error) {
	l := Link{ID: uuid.Must(uuid.NewV7()), Type: s.Type, TargetID: s.TargetID, URL: s.URL}
	err := tx.QueryRow(ctx, `
		INSERT INTO ticket_links (tenant_id, id, ticket_id, type, target_id, url) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT DO NOTHING RETURNING created_at`,
		tenantID, l.ID, ticketID, l.Type, l.TargetID, l.URL).Scan(&l.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Link{}, problem.New(http.StatusConflict, problem.CodeConflict, "the ticket already has this link")
	}
	if err != nil {
		return Link{}, fmt.Errorf("insert ticket link: %w", err)
	}
	l.CreatedAt = l.CreatedAt.UTC()
	return l, nil
}

// AddLink links a ticket to an alert, asset, ticket or URL. A target of
// another tenant is a 404, as if it did not exist. Linking an alert also
// writes the alert's timeline and announces the ticket's new alert_ids.
func AddLink(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID, s LinkSpec) (Link, error) {
	if err := checkLinkSpec(ticketID, s); err != nil {
		return Link{}, err
	}
	t, err := Get(ctx, tx, ticketID)
	if err != nil {
		return Link{}, err
	}
	if s.TargetID != nil {
		ok, err := targetExists(ctx, tx, s.Type, *s.TargetID)
		if err != nil {
			return Link{}, err
		}
		if !ok {
			return Link{}, problem.NotFound(s.Type)
		}
	}
	l, err := insertLink(ctx, tx, tenantID, ticketID, s)
	if err != nil {
		return Link{}, err
	}
	details := map[string]any{"number": t.Number, "link_id": l.ID.String(), "type": l.Type}
	if l.TargetID != nil {
		details["target_id"] = l.TargetID.String()
	}
	if l.URL != nil {
		details["url"] = redact.Masked(*l.URL)
	}
	if err := audit.Record(ctx, tx, tenantID, audit.Entry{Action: "ticket.linked", TargetType: "ticket", TargetID: ticketID.String(), Details: details}); err != nil {
		return Link{}, err
	}
	if l.Type == LinkAlert {
		t.AlertIDs = append(t.AlertIDs, *l.TargetID)
		if err := recordOnAlert(ctx, tx, tenantID, *l.TargetID, fmt.Sprintf("linked to ticket #%d", t.Number), t); err != nil {
			return Link{}, err
		}
		if err := outbox.Publish(ctx, tx, tenantID, outbox.Event{Type: EventUpdated, AggregateType: "ticket", AggregateID: t.ID, Payload: t.facts()}); err != nil {
			return Link{}, err
		}
	}
	return l, nil
}

// ListLinks lists a ticket's links, oldest first.
func ListLinks(ctx context.Context, tx pgx.Tx, ticketID uuid.UUID) ([]Link, error) {
	if _, err := Get(ctx, tx, ticketID); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT id, type, target_id, url, created_at FROM ticket_links WHERE ticket_id = $1 ORDER BY id`, ticketID)
	if err != nil {
		return nil, fmt.Errorf("list ticket links: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Link, error) {
		var l Link
		err := r.Scan(&l.ID, &l.Type, &l.TargetID, &l.URL, &l.CreatedAt)
		l.CreatedAt = l.CreatedAt.UTC()
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("list ticket links: %w", err)
	}
	return list, nil
}

// OpenFromAlert opens a ticket for an alert of the transaction's tenant and
// links them both ways: a link from the ticket to the alert, and a
// ticket_linked entry on the alert's timeline. An empty spec.Title becomes
// "Unauthorized device: <asset name>".
func OpenFromAlert(ctx context.Context, tx pgx.Tx, tenantID, alertID uuid.UUID, spec Spec) (Ticket, error) {
	var assetName string
	err := tx.QueryRow(ctx, `
		SELECT s.name FROM alerts a JOIN assets s ON s.tenant_id = a.tenant_id AND s.id = a.asset_id
		 WHERE a.id = $1`, alertID).Scan(&assetName)
	if errors.Is(err, pgx.ErrNoRows) {
		return Ticket{}, problem.NotFound("alert")
	}
	if err != nil {
		return Ticket{}, fmt.Errorf("read alert: %w", err)
	}
	if spec.Title == "" {
		spec.Title = truncate("Unauthorized device: "+assetName, MaxTitleLength)
	}
	t, err := insert(ctx, tx, tenantID, spec)
	if err != nil {
		return Ticket{}, err
	}
	if _, err := insertLink(ctx, tx, tenantID, t.ID, LinkSpec{Type: LinkAlert, TargetID: &alertID}); err != nil {
		return Ticket{}, err
	}
	t.AlertIDs = []uuid.UUID{alertID}
	if err := recordOnAlert(ctx, tx, tenantID, alertID, fmt.Sprintf("ticket #%d opened", t.Number), t); err != nil {
		return Ticket{}, err
	}
	if err := recordCreated(ctx, tx, tenantID, t, map[string]any{"from_alert_id": alertID.String()}); err != nil {
		return Ticket{}, err
	}
	return t, nil
}

// recordOnAlert writes a ticket_linked entry on the alert's timeline.
func recordOnAlert(ctx context.Context, tx pgx.Tx, tenantID, alertID uuid.UUID, summary string, t Ticket) error {
	return alerts.LinkTicket(ctx, tx, tenantID, alertID, t.ID, t.Number, summary)
}

// facts are a ticket's fields that leave the system in domain events and
// audit details (with the title masked there). The description and
// comments never do.
func (t Ticket) facts() map[string]any {
	alertIDs := make([]string, 0, len(t.AlertIDs))
	for _, id := range t.AlertIDs {
		alertIDs = append(alertIDs, id.String())
	}
	return map[string]any{
		"id": t.ID.String(), "number": t.Number, "title": t.Title, "status": t.Status, "priority": t.Priority,
		"assignee_id": optionalID(t.AssigneeID), "alert_ids": alertIDs,
	}
}

func optionalID(id *uuid.UUID) any {
	if id == nil {
		return nil
	}
	return id.String()
}

// truncate cuts s to at most n characters.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}
