package agents

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/edgeward/edgeward/controlplane/internal/jsoncheck"
)

// checkedJSON is the agent protocol's JSON codec: Connect's own (protojson,
// unknown fields discarded), behind the same body check as every REST body,
// so a JSON message that nests too deep, repeats a key or holds text that
// is not valid Unicode is refused (invalid_argument) before protojson
// builds anything from it.
type checkedJSON struct{ name string }

// jsonCodecs replace Connect's two JSON codec names.
func jsonCodecs() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(checkedJSON{name: "json"}),
		connect.WithCodec(checkedJSON{name: "json; charset=utf-8"}),
	}
}

func (c checkedJSON) Name() string { return c.name }

func (checkedJSON) Marshal(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", message)
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

func (checkedJSON) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", message)
	}
	if len(data) == 0 {
		return errors.New("a zero-length payload is not a JSON object")
	}
	if err := jsoncheck.Check(data, jsoncheck.MaxDepth); err != nil {
		return fmt.Errorf("the message is refused: %w", err)
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
}
