package deliveries

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/caller"
	"github.com/edgeward/edgeward/controlplane/internal/deliveries/webhook"
	"github.com/edgeward/edgeward/controlplane/internal/etag"
	"github.com/edgeward/edgeward/controlplane/internal/page"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
	"github.com/edgeward/edgeward/controlplane/internal/redact"
)

// API serves the delivery operations of specs/openapi.yaml.
type API struct {
	S *Service
}

type idCursor struct {
	ID uuid.UUID `json:"i"`
}

type attemptCursor struct {
	N int `json:"n"`
}

// checkURL runs the SSRF guard on a URL a tenant_admin sets.
func (a *API) checkURL(ctx context.Context, raw, pointer string) error {
	err := a.S.cfg.Sender.Guard.CheckURL(ctx, raw, a.S.cfg.Sender.Resolver)
	var ue *webhook.URLError
	if errors.As(err, &ue) {
		p := problem.New(http.StatusUnprocessableEntity, codeURLRefused, ue.Reason)
		p.Errors = []problem.Field{{Pointer: pointer, Detail: ue.Reason}}
		return p
	}
	return err
}

// ListDeliveryDestinations implements GET /api/v1/delivery-destinations.
func (a *API) ListDeliveryDestinations(ctx context.Context, req api.ListDeliveryDestinationsRequestObject) (api.ListDeliveryDestinationsResponseObject, error) {
	limit := page.Limit(req.Params.Limit)
	var cur idCursor
	var before *uuid.UUID
	if has, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		before = &cur.ID
	}
	var list []Destination
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		list, err = ListDestinations(ctx, tx, before, limit)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListDeliveryDestinations200JSONResponse{Items: make([]api.DeliveryDestination, 0, len(list))}
	for _, d := range list {
		out.Items = append(out.Items, d.toAPI())
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].ID})
	}
	return out, nil
}

// CreateDeliveryDestination implements POST /api/v1/delivery-destinations.
func (a *API) CreateDeliveryDestination(ctx context.Context, req api.CreateDeliveryDestinationRequestObject) (api.CreateDeliveryDestinationResponseObject, error) {
	b := req.Body
	if err := a.checkURL(ctx, b.Url, "#/url"); err != nil {
		return nil, err
	}
	spec := DestinationSpec{Name: b.Name, URL: b.Url, EventTypes: eventTypes(b.EventTypes), Enabled: b.Enabled == nil || *b.Enabled}
	if b.AuthHeader != nil {
		spec.AuthHeader = authHeader(*b.AuthHeader)
	}
	var d Destination
	var secret string
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		d, secret, err = CreateDestination(ctx, tx, a.S.cfg.Keys, c.TenantID, spec)
		return err
	}); err != nil {
		return nil, err
	}
	return api.CreateDeliveryDestination201JSONResponse{Body: api.DeliveryDestinationCreated{Destination: d.toAPI(), Secret: secret},
		Headers: api.CreateDeliveryDestination201ResponseHeaders{ETag: d.etag()}}, nil
}

// GetDeliveryDestination implements GET /api/v1/delivery-destinations/{destination_id}.
func (a *API) GetDeliveryDestination(ctx context.Context, req api.GetDeliveryDestinationRequestObject) (api.GetDeliveryDestinationResponseObject, error) {
	var d Destination
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		d, err = GetDestination(ctx, tx, req.DestinationId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetDeliveryDestination200JSONResponse{Body: d.toAPI(), Headers: api.GetDeliveryDestination200ResponseHeaders{ETag: d.etag()}}, nil
}

// UpdateDeliveryDestination implements PATCH /api/v1/delivery-destinations/{destination_id}.
func (a *API) UpdateDeliveryDestination(ctx context.Context, req api.UpdateDeliveryDestinationRequestObject) (api.UpdateDeliveryDestinationResponseObject, error) {
	b := req.Body
	p := DestinationPatch{Name: b.Name, URL: b.Url, Enabled: b.Enabled}
	if b.Url != nil {
		if err := a.checkURL(ctx, *b.Url, "#/url"); err != nil {
			return nil, err
		}
	}
	if b.EventTypes != nil {
		t := eventTypes(*b.EventTypes)
		p.EventTypes = &t
	}
	if b.AuthHeader.IsSpecified() {
		if h, err := b.AuthHeader.Get(); err == nil {
			p.AuthHeader = authHeader(h)
		} else {
			p.ClearAuthHeader = true
		}
	}
	var d Destination
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		d, err = UpdateDestination(ctx, tx, a.S.cfg.Keys, c.TenantID, req.DestinationId, req.Params.IfMatch, p)
		return err
	}); err != nil {
		return nil, err
	}
	return api.UpdateDeliveryDestination200JSONResponse{Body: d.toAPI(), Headers: api.UpdateDeliveryDestination200ResponseHeaders{ETag: d.etag()}}, nil
}

// DeleteDeliveryDestination implements DELETE /api/v1/delivery-destinations/{destination_id}.
func (a *API) DeleteDeliveryDestination(ctx context.Context, req api.DeleteDeliveryDestinationRequestObject) (api.DeleteDeliveryDestinationResponseObject, error) {
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(c caller.Caller, tx pgx.Tx) error {
		return DeleteDestination(ctx, tx, c.TenantID, req.DestinationId)
	}); err != nil {
		return nil, err
	}
	return api.DeleteDeliveryDestination204Response{}, nil
}

// RotateDeliveryDestinationSecret implements POST /api/v1/delivery-destinations/{destination_id}/rotate-secret.
func (a *API) RotateDeliveryDestinationSecret(ctx context.Context, req api.RotateDeliveryDestinationSecretRequestObject) (api.RotateDeliveryDestinationSecretResponseObject, error) {
	var secret string
	var until time.Time
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		secret, until, err = RotateSecret(ctx, tx, a.S.cfg.Keys, c.TenantID, req.DestinationId, a.S.cfg.SecretOverlap)
		return err
	}); err != nil {
		return nil, err
	}
	return api.RotateDeliveryDestinationSecret200JSONResponse{Secret: secret, PreviousSecretExpiresAt: until.UTC()}, nil
}

// ListDeliveries implements GET /api/v1/deliveries.
func (a *API) ListDeliveries(ctx context.Context, req api.ListDeliveriesRequestObject) (api.ListDeliveriesResponseObject, error) {
	p := req.Params
	f := Filter{Limit: page.Limit(p.Limit), DestinationID: p.DestinationId, Since: p.Since, Until: p.Until}
	if p.Status != nil {
		f.Status = string(*p.Status)
	}
	if p.EventType != nil {
		f.EventType = string(*p.EventType)
	}
	var cur idCursor
	if has, err := page.Decode(ctx, p.Cursor, &cur); err != nil {
		return nil, err
	} else if has {
		f.BeforeID = &cur.ID
	}
	var list []Delivery
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		list, err = List(ctx, tx, f)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, f.Limit)
	out := api.ListDeliveries200JSONResponse{Items: make([]api.Delivery, 0, len(list))}
	for _, d := range list {
		out.Items = append(out.Items, d.toAPI())
	}
	if more {
		out.NextCursor = page.Encode(ctx, idCursor{ID: list[len(list)-1].ID})
	}
	return out, nil
}

// GetDelivery implements GET /api/v1/deliveries/{delivery_id}.
func (a *API) GetDelivery(ctx context.Context, req api.GetDeliveryRequestObject) (api.GetDeliveryResponseObject, error) {
	var d Delivery
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(_ caller.Caller, tx pgx.Tx) (err error) {
		d, err = Get(ctx, tx, req.DeliveryId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.GetDelivery200JSONResponse(d.toAPI()), nil
}

// ListDeliveryAttempts implements GET /api/v1/deliveries/{delivery_id}/attempts.
func (a *API) ListDeliveryAttempts(ctx context.Context, req api.ListDeliveryAttemptsRequestObject) (api.ListDeliveryAttemptsResponseObject, error) {
	limit := page.Limit(req.Params.Limit)
	var cur attemptCursor
	if _, err := page.Decode(ctx, req.Params.Cursor, &cur); err != nil {
		return nil, err
	}
	if !page.ValidInt32(cur.N) {
		return nil, page.InvalidCursor()
	}
	var list []Attempt
	var red *redact.Redactor
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		if list, err = Attempts(ctx, tx, req.DeliveryId, cur.N, limit); err != nil {
			return err
		}
		red, err = redact.ForReader(ctx, tx, c.TenantID, c.Role)
		return err
	}); err != nil {
		return nil, err
	}
	list, more := page.Trim(list, limit)
	out := api.ListDeliveryAttempts200JSONResponse{Items: make([]api.DeliveryAttempt, 0, len(list))}
	for _, at := range list {
		out.Items = append(out.Items, at.toAPI(red))
	}
	if more {
		out.NextCursor = page.Encode(ctx, attemptCursor{N: list[len(list)-1].Number})
	}
	return out, nil
}

// RetryDelivery implements POST /api/v1/deliveries/{delivery_id}/retry.
func (a *API) RetryDelivery(ctx context.Context, req api.RetryDeliveryRequestObject) (api.RetryDeliveryResponseObject, error) {
	var d Delivery
	if err := caller.InTenant(ctx, a.S.cfg.Pool, func(c caller.Caller, tx pgx.Tx) (err error) {
		d, err = a.S.Retry(ctx, tx, c.TenantID, req.DeliveryId)
		return err
	}); err != nil {
		return nil, err
	}
	return api.RetryDelivery202JSONResponse(d.toAPI()), nil
}

// authHeader takes the header from a request (the spec requires its value;
// it is a pointer only because the field is write-only).
func authHeader(h api.DeliveryAuthHeaderSet) *AuthHeader {
	out := &AuthHeader{Name: h.Name}
	if h.Value != nil {
		out.Value = *h.Value
	}
	return out
}

func eventTypes(in []api.DeliveryEventType) []string {
	out := make([]string, len(in))
	for i, t := range in {
		out[i] = string(t)
	}
	return out
}

func (d Destination) etag() *string {
	s := etag.Of(d.Version)
	return &s
}

func (d Destination) toAPI() api.DeliveryDestination {
	out := api.DeliveryDestination{
		Id: d.ID, Name: d.Name, Url: d.URL, Enabled: d.Enabled, State: api.DeliveryDestinationState(d.State()),
		DisabledAt: api.UTC(d.DisabledAt), PreviousSecretExpiresAt: api.UTC(d.PreviousSecretExpiresAt),
		Health: api.DeliveryDestinationHealth{LastSuccessAt: api.UTC(d.LastSuccessAt), LastFailureAt: api.UTC(d.LastFailureAt),
			FailingSince: api.UTC(d.FailingSince), ConsecutiveFailures: d.ConsecutiveFailures, PendingDeliveries: d.Pending},
		Version: d.Version, CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(),
		EventTypes: make([]api.DeliveryEventType, 0, len(d.EventTypes)),
	}
	if out.PreviousSecretExpiresAt != nil && out.PreviousSecretExpiresAt.Before(time.Now()) {
		out.PreviousSecretExpiresAt = nil // the overlap is over
	}
	for _, t := range d.EventTypes {
		out.EventTypes = append(out.EventTypes, api.DeliveryEventType(t))
	}
	if d.DisabledReason != nil {
		r := api.DeliveryDisabledReason(*d.DisabledReason)
		out.DisabledReason = &r
	}
	if d.AuthHeaderName != nil {
		out.AuthHeader = &api.DeliveryAuthHeader{Name: *d.AuthHeaderName, Configured: true}
	}
	return out
}

func (d Delivery) toAPI() api.Delivery {
	out := api.Delivery{
		Id: d.ID, WebhookId: d.WebhookID(), DestinationId: d.DestinationID,
		Event: api.DeliveryEvent{Id: d.EventID, Type: api.DeliveryEventType(d.EventType), AggregateType: d.AggregateType,
			AggregateId: d.AggregateID, CreatedAt: d.EventCreatedAt.UTC()},
		Status: api.DeliveryStatus(d.Status), AttemptCount: d.AttemptCount, NextRetryAt: api.UTC(d.NextRetryAt),
		LastAttemptAt: api.UTC(d.LastAttemptAt), LastStatusCode: d.LastStatusCode,
		CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(), CompletedAt: api.UTC(d.CompletedAt),
	}
	if d.LastErrorClass != nil {
		c := api.DeliveryErrorClass(*d.LastErrorClass)
		out.LastErrorClass = &c
	}
	return out
}

// toAPI is an attempt as a reader sees it. With a Redactor (a reader who
// does not see identifiers) the response body is withheld, not masked: it
// is a third party's text, which may echo the webhook (the alert's title
// names the device) or hold anything of the receiver's own (host names,
// user names, its tokens) that masking MACs and addresses would not catch,
// and an auditor needs the outcome (status, error class, timing), not the
// body. The error is this code's own description of the failure; its
// addresses are masked.
func (a Attempt) toAPI(red *redact.Redactor) api.DeliveryAttempt {
	out := api.DeliveryAttempt{
		Id: a.ID, DeliveryId: a.DeliveryID, Attempt: a.Number, Trigger: api.DeliveryAttemptTrigger(a.Trigger),
		StartedAt: a.StartedAt.UTC(), EndedAt: a.EndedAt.UTC(), DurationMs: a.DurationMS, StatusCode: a.StatusCode,
		Error: a.Error, ResponseBody: a.ResponseBody, ResponseTruncated: a.ResponseTruncated, RetryAfterSeconds: a.RetryAfterSeconds,
	}
	if red != nil {
		out.Redacted, out.ResponseBody = true, nil
		if a.Error != nil {
			e := red.Text(*a.Error)
			out.Error = &e
		}
	}
	if a.ErrorClass != nil {
		c := api.DeliveryErrorClass(*a.ErrorClass)
		out.ErrorClass = &c
	}
	return out
}
