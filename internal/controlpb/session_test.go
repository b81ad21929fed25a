package controlpb_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

const testEpoch = 7

// echoMaster answers a Register with Registered (or Refused for a wrong
// epoch) and a Heartbeat with its echo, and ends the session on Refused.
type echoMaster struct {
	pb.UnimplementedControlServer
	gotRegister chan *pb.Register
}

func (m *echoMaster) Session(stream grpc.BidiStreamingServer[pb.FromTaskManager, pb.FromMaster]) error {
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch msg := in.Msg.(type) {
		case *pb.FromTaskManager_Register:
			m.gotRegister <- msg.Register
			if in.Epoch != 0 {
				_ = stream.Send(&pb.FromMaster{Epoch: testEpoch, Msg: &pb.FromMaster_Refused{Refused: &pb.Refused{Reason: "register carries an epoch"}}})
				return nil
			}
			if err := stream.Send(&pb.FromMaster{Epoch: testEpoch, Msg: &pb.FromMaster_Registered{Registered: &pb.Registered{
				TaskmanagerId:       "tm-1",
				HeartbeatIntervalMs: 1000,
				HeartbeatTimeoutMs:  4000,
				JobName:             "clicks",
				JobSpec:             []byte(`{"name":"clicks"}`),
			}}}); err != nil {
				return err
			}
		case *pb.FromTaskManager_Heartbeat:
			if err := stream.Send(&pb.FromMaster{Epoch: testEpoch, Msg: &pb.FromMaster_Heartbeat{Heartbeat: &pb.Heartbeat{
				SentUnixNanos: time.Now().UnixNano(),
				EchoUnixNanos: msg.Heartbeat.SentUnixNanos,
			}}}); err != nil {
				return err
			}
		}
	}
}

func startMaster(t *testing.T) (*echoMaster, pb.ControlClient) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &echoMaster{gotRegister: make(chan *pb.Register, 1)}
	srv := grpc.NewServer()
	pb.RegisterControlServer(srv, m)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return m, pb.NewControlClient(conn)
}

func TestSessionRegisterAndHeartbeat(t *testing.T) {
	m, client := startMaster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stream, err := client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg := &pb.Register{
		Slots:       2,
		DataAddress: "127.0.0.1:7001",
		Host:        "worker-a",
		ResourceId:  "local-1",
		Pid:         4242,
		LocalCopies: []*pb.LocalCopy{{CheckpointId: 3, Node: "window", Subtask: 1}},
	}
	if err := stream.Send(&pb.FromTaskManager{Msg: &pb.FromTaskManager_Register{Register: reg}}); err != nil {
		t.Fatal(err)
	}
	if got := <-m.gotRegister; !proto.Equal(got, reg) {
		t.Fatalf("master got %v, want %v", got, reg)
	}
	in, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	registered := in.GetRegistered()
	if in.Epoch != testEpoch || registered.GetTaskmanagerId() != "tm-1" || registered.GetHeartbeatTimeoutMs() != 4000 ||
		string(registered.GetJobSpec()) != `{"name":"clicks"}` {
		t.Fatalf("got %v, want Registered tm-1 at epoch %d", in, testEpoch)
	}

	for i := int64(1); i <= 3; i++ {
		if err := stream.Send(&pb.FromTaskManager{Epoch: in.Epoch, TaskmanagerId: registered.TaskmanagerId,
			Msg: &pb.FromTaskManager_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNanos: i}}}); err != nil {
			t.Fatal(err)
		}
		hb, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := hb.GetHeartbeat().GetEchoUnixNanos(); got != i {
			t.Fatalf("heartbeat %d: echo %d (%v)", i, got, hb)
		}
	}

	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
}

func TestSessionRefusedEndsStream(t *testing.T) {
	_, client := startMaster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stream, err := client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.FromTaskManager{Epoch: 3, Msg: &pb.FromTaskManager_Register{Register: &pb.Register{Slots: 1}}}); err != nil {
		t.Fatal(err)
	}
	in, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if in.GetRefused().GetReason() == "" {
		t.Fatalf("got %v, want Refused", in)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after Refused: %v, want EOF", err)
	}
}

// TestMessagesRoundTrip marshals a message of each kind the master and a
// TaskManager exchange, so a field lost in generation shows up here.
func TestMessagesRoundTrip(t *testing.T) {
	msgs := []proto.Message{
		&pb.FromMaster{Epoch: 2, Msg: &pb.FromMaster_Deploy{Deploy: &pb.Deploy{
			Attempt: "a3", Tasks: []int32{0, 4}, Locations: []*pb.TaskLocation{{Task: 5, DataAddress: "h:1"}},
			Restore:           &pb.Restore{CheckpointId: 9, Location: "file:///ck/9", SkippedNewer: 10, AllowDuplicates: true, AcceptLoss: true},
			CheckpointStorage: "hdfs://nn/ck", FirstCheckpointId: 11, Incremental: true, LocalRecovery: true,
		}}},
		&pb.FromMaster{Epoch: 2, Msg: &pb.FromMaster_TriggerCheckpoint{TriggerCheckpoint: &pb.TriggerCheckpoint{Attempt: "a3", Id: 11, Savepoint: true, Final: true, Stop: true}}},
		&pb.FromMaster{Epoch: 2, Msg: &pb.FromMaster_SkipBacklog{SkipBacklog: &pb.SkipBacklog{Attempt: "a3", RequestId: "r1", Node: "src"}}},
		&pb.FromTaskManager{Epoch: 2, TaskmanagerId: "tm-1", Msg: &pb.FromTaskManager_TaskState{TaskState: &pb.TaskState{
			Attempt: "a3", Task: 4, State: pb.TaskState_STATE_FAILED,
			Error: &pb.ErrorInfo{Message: "boom", Kind: pb.ErrorInfo_KIND_FALLBACK_REFUSED, Node: "sink", Reason: "committed after 9"},
		}}},
		&pb.FromTaskManager{Epoch: 2, TaskmanagerId: "tm-1", Msg: &pb.FromTaskManager_AckCheckpoint{AckCheckpoint: &pb.AckCheckpoint{
			Attempt: "a3", Task: 4, Id: 11, States: []*pb.NodeSubtaskState{{Node: "window", Parallelism: 2, StateJson: []byte(`{}`)}},
		}}},
		&pb.FromTaskManager{Epoch: 2, TaskmanagerId: "tm-1", Msg: &pb.FromTaskManager_Metrics{Metrics: &pb.MetricsReport{
			Attempt: "a3", Subtasks: []*pb.SubtaskMetrics{{Node: "window", Subtask: 1, RowsIn: 10, RowsOut: 2, BytesIn: 100, BytesOut: 20, BackPressuredMs: 5, Watermark: -1}},
		}}},
	}
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, m) {
			t.Fatalf("round trip: got %v, want %v", got, m)
		}
	}
}
