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
)

// Status is what `edgeward-agent status` shows of a running agent. The
// queue file is locked while the agent runs, so the agent publishes these
// figures instead.
type Status struct {
	PID                 int       `json:"pid"`
	UpdatedAt           time.Time `json:"updated_at"`
	State               string    `json:"state"`
	AgentID             string    `json:"agent_id"`
	Server              string    `json:"server"`
	Interval            string    `json:"interval"`
	LastSendAt          time.Time `json:"last_send_at,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	QueueDepth          int       `json:"queue_depth"`
	QueueDropped        uint64    `json:"queue_dropped"`
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
