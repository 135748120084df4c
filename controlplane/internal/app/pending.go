package app

// pending serves the operations whose rooms are being built in this
// change; every method answers 501. It is deleted when they land.

import (
	"context"
	"net/http"

	"github.com/edgeward/edgeward/controlplane/internal/api"
	"github.com/edgeward/edgeward/controlplane/internal/problem"
)

type pending struct{}

func notYet() error {
	return problem.New(http.StatusNotImplemented, "not_implemented", "this operation is not implemented yet")
}

func (pending) ListAgentCommands(context.Context, api.ListAgentCommandsRequestObject) (api.ListAgentCommandsResponseObject, error) {
	return nil, notYet()
}

func (pending) QueueAgentCommand(context.Context, api.QueueAgentCommandRequestObject) (api.QueueAgentCommandResponseObject, error) {
	return nil, notYet()
}

func (pending) ListAlerts(context.Context, api.ListAlertsRequestObject) (api.ListAlertsResponseObject, error) {
	return nil, notYet()
}

func (pending) GetAlert(context.Context, api.GetAlertRequestObject) (api.GetAlertResponseObject, error) {
	return nil, notYet()
}

func (pending) AcknowledgeAlert(context.Context, api.AcknowledgeAlertRequestObject) (api.AcknowledgeAlertResponseObject, error) {
	return nil, notYet()
}

func (pending) AssignAlert(context.Context, api.AssignAlertRequestObject) (api.AssignAlertResponseObject, error) {
	return nil, notYet()
}

func (pending) GetAlertEvidence(context.Context, api.GetAlertEvidenceRequestObject) (api.GetAlertEvidenceResponseObject, error) {
	return nil, notYet()
}

func (pending) ResolveAlert(context.Context, api.ResolveAlertRequestObject) (api.ResolveAlertResponseObject, error) {
	return nil, notYet()
}

func (pending) CreateTicketFromAlert(context.Context, api.CreateTicketFromAlertRequestObject) (api.CreateTicketFromAlertResponseObject, error) {
	return nil, notYet()
}

func (pending) GetAlertTimeline(context.Context, api.GetAlertTimelineRequestObject) (api.GetAlertTimelineResponseObject, error) {
	return nil, notYet()
}

func (pending) AuthorizeAsset(context.Context, api.AuthorizeAssetRequestObject) (api.AuthorizeAssetResponseObject, error) {
	return nil, notYet()
}

func (pending) UnauthorizeAsset(context.Context, api.UnauthorizeAssetRequestObject) (api.UnauthorizeAssetResponseObject, error) {
	return nil, notYet()
}

func (pending) ListAuditorEvidence(context.Context, api.ListAuditorEvidenceRequestObject) (api.ListAuditorEvidenceResponseObject, error) {
	return nil, notYet()
}

func (pending) GetAuditorEvidence(context.Context, api.GetAuditorEvidenceRequestObject) (api.GetAuditorEvidenceResponseObject, error) {
	return nil, notYet()
}

func (pending) ListCollectors(context.Context, api.ListCollectorsRequestObject) (api.ListCollectorsResponseObject, error) {
	return nil, notYet()
}

func (pending) GetCollector(context.Context, api.GetCollectorRequestObject) (api.GetCollectorResponseObject, error) {
	return nil, notYet()
}

func (pending) GetCommand(context.Context, api.GetCommandRequestObject) (api.GetCommandResponseObject, error) {
	return nil, notYet()
}

func (pending) ListDiscoveryAuthorizations(context.Context, api.ListDiscoveryAuthorizationsRequestObject) (api.ListDiscoveryAuthorizationsResponseObject, error) {
	return nil, notYet()
}

func (pending) RequestDiscoveryAuthorization(context.Context, api.RequestDiscoveryAuthorizationRequestObject) (api.RequestDiscoveryAuthorizationResponseObject, error) {
	return nil, notYet()
}

func (pending) ListObservations(context.Context, api.ListObservationsRequestObject) (api.ListObservationsResponseObject, error) {
	return nil, notYet()
}

func (pending) ListDiscoveryPolicies(context.Context, api.ListDiscoveryPoliciesRequestObject) (api.ListDiscoveryPoliciesResponseObject, error) {
	return nil, notYet()
}

func (pending) GetDiscoveryPolicy(context.Context, api.GetDiscoveryPolicyRequestObject) (api.GetDiscoveryPolicyResponseObject, error) {
	return nil, notYet()
}

func (pending) PutDiscoveryPolicy(context.Context, api.PutDiscoveryPolicyRequestObject) (api.PutDiscoveryPolicyResponseObject, error) {
	return nil, notYet()
}

func (pending) GetDiscoveryStatus(context.Context, api.GetDiscoveryStatusRequestObject) (api.GetDiscoveryStatusResponseObject, error) {
	return nil, notYet()
}

func (pending) ListEvidence(context.Context, api.ListEvidenceRequestObject) (api.ListEvidenceResponseObject, error) {
	return nil, notYet()
}

func (pending) GetEvidence(context.Context, api.GetEvidenceRequestObject) (api.GetEvidenceResponseObject, error) {
	return nil, notYet()
}

func (pending) ListSites(context.Context, api.ListSitesRequestObject) (api.ListSitesResponseObject, error) {
	return nil, notYet()
}

func (pending) CreateSite(context.Context, api.CreateSiteRequestObject) (api.CreateSiteResponseObject, error) {
	return nil, notYet()
}

func (pending) GetSite(context.Context, api.GetSiteRequestObject) (api.GetSiteResponseObject, error) {
	return nil, notYet()
}

func (pending) UpdateSite(context.Context, api.UpdateSiteRequestObject) (api.UpdateSiteResponseObject, error) {
	return nil, notYet()
}

func (pending) ListTickets(context.Context, api.ListTicketsRequestObject) (api.ListTicketsResponseObject, error) {
	return nil, notYet()
}

func (pending) CreateTicket(context.Context, api.CreateTicketRequestObject) (api.CreateTicketResponseObject, error) {
	return nil, notYet()
}

func (pending) GetTicket(context.Context, api.GetTicketRequestObject) (api.GetTicketResponseObject, error) {
	return nil, notYet()
}

func (pending) UpdateTicket(context.Context, api.UpdateTicketRequestObject) (api.UpdateTicketResponseObject, error) {
	return nil, notYet()
}

func (pending) ListTicketComments(context.Context, api.ListTicketCommentsRequestObject) (api.ListTicketCommentsResponseObject, error) {
	return nil, notYet()
}

func (pending) AddTicketComment(context.Context, api.AddTicketCommentRequestObject) (api.AddTicketCommentResponseObject, error) {
	return nil, notYet()
}

func (pending) ListTicketLinks(context.Context, api.ListTicketLinksRequestObject) (api.ListTicketLinksResponseObject, error) {
	return nil, notYet()
}

func (pending) AddTicketLink(context.Context, api.AddTicketLinkRequestObject) (api.AddTicketLinkResponseObject, error) {
	return nil, notYet()
}
