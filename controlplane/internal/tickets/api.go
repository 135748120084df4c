package tickets

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/db"
	"github.com/edgeward/edgeward/controlplane/internal/etag"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// API serves the ticket operations of specs/openapi.yaml.
type API struct {
	Pool *pgxpool.Pool
}

type idCursor struct {
	ID uuid.UUID `json:"i"`
}

// ListTickets implements GET /api/v1/tickets.
func (a *API) ListTickets(ctx context.Context, req api.ListTicketsRequestObject) (api.ListTicketsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	p := req.Params
	f := Filter{Limit: page.Limit(p.Limit), AssigneeID: p.AssigneeId}
	if p.Status != nil {
		f.Status = string(*p.Status)
	}
	if p.Priority != nil {
		f.Priority = string(*p.Priority)
	}
	var cur idCursor
	if has, err := page.Decode(ctx, p.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		f.BeforeID = &cur.ID
	}
	var list []Ticket
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		list, err = List(ctx, tx, f)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, f.Limit)
	out := api.ListTickets200JSONResponse{Items: make([]api.Ticket, 0, len(list))}
	for _, t := range list {
		out.Items = append(out.Items, t.toAPI(red))
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].ID})
	}
	return out, nil
}

// CreateTicket implements POST /api/v1/tickets.
func (a *API) CreateTicket(ctx context.Context, req api.CreateTicketRequestObject) (api.CreateTicketResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	b := req.Body
	spec := Spec{Title: b.Title, Description: deref(b.Description), AssigneeID: b.AssigneeId, CreatedBy: &c.PrincipalID}
	if b.Priority != nil {
		spec.Priority = string(*b.Priority)
	}
	var t Ticket
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		t, err = Create(ctx, tx, c.TenantID, spec)
		return err
	}); err != nil {
		return nil, err
	}
	return api.CreateTicket201JSONResponse{Body: t.toAPI(nil), Headers: api.CreateTicket201ResponseHeaders{ETag: t.etag()}}, nil
}

// GetTicket implements GET /api/v1/tickets/{ticket_id}.
func (a *API) GetTicket(ctx context.Context, req api.GetTicketRequestObject) (api.GetTicketResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var t Ticket
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		t, err = Get(ctx, tx, req.TicketId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetTicket200JSONResponse{Body: t.toAPI(red), Headers: api.GetTicket200ResponseHeaders{ETag: t.etag()}}, nil
}

// UpdateTicket implements PATCH /api/v1/tickets/{ticket_id}.
func (a *API) UpdateTicket(ctx context.Context, req api.UpdateTicketRequestObject) (api.UpdateTicketResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	b := req.Body
	p := Patch{Title: b.Title, Description: b.Description}
	if b.AssigneeId.IsSpecified() {
		if id, err := b.AssigneeId.Get(); err == nil {
			p.AssigneeID = &id
		} else {
			p.Unassign = true
		}
	}
	if b.Status != nil {
		s := string(*b.Status)
		p.Status = &s
	}
	if b.Priority != nil {
		s := string(*b.Priority)
		p.Priority = &s
	}
	var t Ticket
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		t, err = Update(ctx, tx, c.TenantID, req.TicketId, req.Params.IfMatch, p)
		return err
	}); err != nil {
		return nil, err
	}
	return api.UpdateTicket200JSONResponse{Body: t.toAPI(nil), Headers: api.UpdateTicket200ResponseHeaders{ETag: t.etag()}}, nil
}

// ListTicketComments implements GET /api/v1/tickets/{ticket_id}/comments.
func (a *API) ListTicketComments(ctx context.Context, req api.ListTicketCommentsRequestObject) (api.ListTicketCommentsResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	limit := page.Limit(req.Params.Limit)
	var cur idCursor
	var after *uuid.UUID
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		after = &cur.ID
	}
	var list []Comment
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		list, err = ListComments(ctx, tx, req.TicketId, after, limit)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListTicketComments200JSONResponse{Items: make([]api.TicketComment, 0, len(list))}
	for _, cm := range list {
		out.Items = append(out.Items, cm.toAPI(red))
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].ID})
	}
	return out, nil
}

// AddTicketComment implements POST /api/v1/tickets/{ticket_id}/comments.
func (a *API) AddTicketComment(ctx context.Context, req api.AddTicketCommentRequestObject) (api.AddTicketCommentResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var cm Comment
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		cm, err = AddComment(ctx, tx, c.TenantID, req.TicketId, req.Body.Body, c.PrincipalID, c.PrincipalName)
		return err
	}); err != nil {
		return nil, err
	}
	return api.AddTicketComment201JSONResponse(cm.toAPI(nil)), nil
}

// ListTicketLinks implements GET /api/v1/tickets/{ticket_id}/links.
func (a *API) ListTicketLinks(ctx context.Context, req api.ListTicketLinksRequestObject) (api.ListTicketLinksResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	var list []Link
	var red *redact.Redactor
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		if red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role); err != nil {
			return err
		}
		list, err = ListLinks(ctx, tx, req.TicketId)
		return err
	}); err != nil {
		return nil, err
	}
	out := api.ListTicketLinks200JSONResponse{Items: make([]api.TicketLink, 0, len(list))}
	for _, l := range list {
		out.Items = append(out.Items, l.toAPI(red))
	}
	return out, nil
}

// AddTicketLink implements POST /api/v1/tickets/{ticket_id}/links.
func (a *API) AddTicketLink(ctx context.Context, req api.AddTicketLinkRequestObject) (api.AddTicketLinkResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	b := req.Body
	spec := LinkSpec{Type: string(b.Type), TargetID: b.TargetId, URL: b.Url}
	var l Link
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		l, err = AddLink(ctx, tx, c.TenantID, req.TicketId, spec)
		return err
	}); err != nil {
		return nil, err
	}
	return api.AddTicketLink201JSONResponse(l.toAPI(nil)), nil
}

// CreateTicketFromAlert implements POST /api/v1/alerts/{alert_id}/tickets.
func (a *API) CreateTicketFromAlert(ctx context.Context, req api.CreateTicketFromAlertRequestObject) (api.CreateTicketFromAlertResponseObject, error) {
	c, err := caller.Require(ctx)
	if err != nil {
		return nil, err
	}
	spec := Spec{CreatedBy: &c.PrincipalID}
	if b := req.Body; b != nil {
		spec.Title, spec.Description, spec.AssigneeID = deref(b.Title), deref(b.Description), b.AssigneeId
		if b.Priority != nil {
			spec.Priority = string(*b.Priority)
		}
	}
	var t Ticket
	if err := db.InTenant(ctx, a.Pool, c.TenantID, func(tx pgx.Tx) error {
		t, err = OpenFromAlert(ctx, tx, c.TenantID, req.AlertId, spec)
		return err
	}); err != nil {
		return nil, err
	}
	return api.CreateTicketFromAlert201JSONResponse{Body: t.toAPI(nil), Headers: api.CreateTicketFromAlert201ResponseHeaders{ETag: t.etag()}}, nil
}

func (t Ticket) etag() *string {
	s := etag.Of(t.Version)
	return &s
}

// toAPI is the ticket as a reader sees it; red (nil for roles that see
// identifiers) masks the MACs and addresses in its text, such as the
// default title of a ticket opened from an alert.
func (t Ticket) toAPI(red *redact.Redactor) api.Ticket {
	var createdBy *string
	if t.CreatedBy != nil {
		s := t.CreatedBy.String()
		createdBy = &s
	}
	alertIDs := t.AlertIDs
	if alertIDs == nil {
		alertIDs = []uuid.UUID{}
	}
	title, description := t.Title, t.Description
	if red != nil {
		title, description = red.Text(title), red.Text(description)
	}
	return api.Ticket{
		Id: t.ID, Number: t.Number, Title: title, Description: description, Status: api.TicketStatus(t.Status), Redacted: red != nil,
		Priority: api.TicketPriority(t.Priority), AssigneeId: t.AssigneeID, CreatedBy: createdBy, CreatedAt: t.CreatedAt,
		UpdatedAt: t.UpdatedAt, Version: t.Version, AlertIds: alertIDs,
	}
}

func (c Comment) toAPI(red *redact.Redactor) api.TicketComment {
	body := c.Body
	if red != nil {
		body = red.Text(body)
	}
	return api.TicketComment{Id: c.ID, Body: body, AuthorId: c.AuthorID, AuthorName: c.AuthorName, CreatedAt: c.CreatedAt, Redacted: red != nil}
}

// toAPI is the REST form of a link; red (nil for roles that see
// identifiers) masks the addresses in an external URL, which may name a
// device (https://192.0.2.66/status).
func (l Link) toAPI(red *redact.Redactor) api.TicketLink {
	out := api.TicketLink{Id: l.ID, Type: api.TicketLinkType(l.Type), TargetId: l.TargetID, Url: l.URL, CreatedAt: l.CreatedAt}
	if red != nil && l.URL != nil {
		u := red.Text(*l.URL)
		out.Url = &u
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
