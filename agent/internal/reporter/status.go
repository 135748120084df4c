package reporter

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// StatusFile is where the running agent says how it is doing.
const StatusFile = "status.json"

// States of a running agent.
const (
	StateStarting = "starting"
	StateOK       = "ok"
	StateRetrying = "retrying"
	StateRefused  = "refused"
	StateStopped  = "stopped"
	// StateQueueFailing: the queue cannot be written (a full disk), so new
	// reports are lost and counted. Sending may still work; SendState says.
	StateQueueFailing = "queue_failing"
)

// Status is what `edgeward-agent status` shows of a running agent. The
// queue file is locked while the agent runs, so the agent publishes these
// figures instead.
type Status struct {
	PID       int       `json:"pid"`
	UpdatedAt time.Time `json:"updated_at"`
	// State is the agent's overall state: SendState, unless the queue
	// cannot be written (StateQueueFailing).
	State string `json:"state"`
	// SendState is how sending to the control plane goes: starting, ok,
	// retrying, refused, stopped. LastError is its last failure.
	SendState    string    `json:"send_state,omitempty"`
	AgentID      string    `json:"agent_id"`
	Server       string    `json:"server"`
	Interval     string    `json:"interval"`
	LastSendAt   time.Time `json:"last_send_at,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	QueueDepth   int       `json:"queue_depth"`
	QueueDropped uint64    `json:"queue_dropped"`
	// QueueUnqueued counts reports that could not be written to the queue.
	QueueUnqueued uint64 `json:"queue_unqueued"`
	// QueueError is set while the queue cannot be written, failing since
	// QueueErrorSince.
	QueueError      string    `json:"queue_error,omitempty"`
	QueueErrorSince time.Time `json:"queue_error_since,omitzero"`
	// QueueLastErrorKind and QueueLastErrorAt describe the most recent
	// failed write, kept after the queue recovered.
	QueueLastErrorKind  string    `json:"queue_last_error_kind,omitempty"`
	QueueLastErrorAt    time.Time `json:"queue_last_error_at,omitzero"`
	CertificateNotAfter time.Time `json:"certificate_not_after"`
	RotateAt            time.Time `json:"rotate_at"`
}

// WriteStatus replaces status.json atomically (without fsync: it is
// rewritten every interval and losing one is harmless).
func WriteStatus(dir string, st Status) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, StatusFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, StatusFile))
}

// ReadStatus reads status.json.
func ReadStatus(dir string) (Status, error) {
	var st Status
	b, err := os.ReadFile(filepath.Join(dir, StatusFile))
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}
