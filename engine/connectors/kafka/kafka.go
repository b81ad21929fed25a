package kafka

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluice-stream/sluice/engine/spec"
)

// Shared by the kafka source and sink: client configuration, the
// partition-to-subtask assignment and the raw transaction requests used on
// restore. Both talk to brokers with github.com/IBM/sarama.

// kafkaClientParams are the params both kafka nodes accept.
type kafkaClientParams struct {
	Brokers []string `json:"brokers"`
	// Clusters is the alternative to brokers: one logical topic over several
	// clusters (dual-cluster), each given by its bootstrap brokers.
	Clusters []kafkaClusterParams `json:"clusters"`
	ClientID string               `json:"clientId"`
	// Version is the Kafka protocol version to speak (default 2.8.0).
	Version string           `json:"version"`
	SASL    *kafkaSASLParams `json:"sasl"`
	TLS     *kafkaTLSParams  `json:"tls"`
	// Cluster health: a cluster is probed every healthCheckInterval (a
	// metadata request), declared down once probes have failed for
	// failureTimeout, and probed every retryInterval while down.
	HealthCheckInterval spec.Duration `json:"healthCheckInterval"`
	FailureTimeout      spec.Duration `json:"failureTimeout"`
	RetryInterval       spec.Duration `json:"retryInterval"`
}

type kafkaClusterParams struct {
	Brokers []string `json:"brokers"`
}

type kafkaSASLParams struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string `json:"mechanism"`
	User      string `json:"user"`
	Password  string `json:"password"`
	// PasswordEnv names an environment variable of the task's process that
	// holds the password, to keep it out of the job spec.
	PasswordEnv string `json:"passwordEnv"`
}

type kafkaTLSParams struct {
	Enabled            bool   `json:"enabled"`
	CAFile             string `json:"caFile"`
	CertFile           string `json:"certFile"`
	KeyFile            string `json:"keyFile"`
	InsecureSkipVerify bool   `json:"insecureSkipVerify"`
}

// Health check defaults.
const (
	kafkaHealthInterval  = time.Second
	kafkaFailureTimeout  = 5 * time.Second
	kafkaRetryInterval   = 5 * time.Second
	kafkaMaxClusterCount = 8
)

func checkBrokers(param string, brokers []string) error {
	if len(brokers) == 0 {
		return fmt.Errorf("%s: required (a list of host:port)", param)
	}
	for i, b := range brokers {
		if !strings.Contains(b, ":") {
			return fmt.Errorf("%s[%d]: %q is not host:port", param, i, b)
		}
	}
	return nil
}

func (p *kafkaClientParams) check() error {
	switch {
	case len(p.Brokers) > 0 && len(p.Clusters) > 0:
		return fmt.Errorf("params.clusters: give brokers or clusters, not both")
	case len(p.Clusters) > 0:
		if len(p.Clusters) > kafkaMaxClusterCount {
			return fmt.Errorf("params.clusters: %d clusters, at most %d", len(p.Clusters), kafkaMaxClusterCount)
		}
		for i, c := range p.Clusters {
			if err := checkBrokers(fmt.Sprintf("params.clusters[%d].brokers", i), c.Brokers); err != nil {
				return err
			}
		}
	default:
		if err := checkBrokers("params.brokers", p.Brokers); err != nil {
			return fmt.Errorf("%w (or clusters)", err)
		}
	}
	if p.Version != "" {
		if _, err := sarama.ParseKafkaVersion(p.Version); err != nil {
			return fmt.Errorf("params.version: %w", err)
		}
	}
	for _, d := range []struct {
		name string
		v    spec.Duration
	}{{"healthCheckInterval", p.HealthCheckInterval}, {"failureTimeout", p.FailureTimeout}, {"retryInterval", p.RetryInterval}} {
		if d.v.D() < 0 {
			return fmt.Errorf("params.%s: %v is negative", d.name, d.v.D())
		}
	}
	if s := p.SASL; s != nil {
		switch s.Mechanism {
		case sarama.SASLTypePlaintext, sarama.SASLTypeSCRAMSHA256, sarama.SASLTypeSCRAMSHA512:
		case "":
			return fmt.Errorf("params.sasl.mechanism: required (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		default:
			return fmt.Errorf("params.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
		}
		if s.User == "" {
			return fmt.Errorf("params.sasl.user: required")
		}
		switch {
		case s.Password != "" && s.PasswordEnv != "":
			return fmt.Errorf("params.sasl.passwordEnv: give password or passwordEnv, not both")
		case s.Password == "" && s.PasswordEnv == "":
			return fmt.Errorf("params.sasl.password: required (or passwordEnv)")
		}
	}
	if t := p.TLS; t != nil {
		if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify) {
			return fmt.Errorf("params.tls.enabled: TLS options are given but tls.enabled is false")
		}
		if (t.CertFile == "") != (t.KeyFile == "") {
			return fmt.Errorf("params.tls.keyFile: certFile and keyFile go together (a client certificate and its key)")
		}
		if t.InsecureSkipVerify && t.CAFile != "" {
			return fmt.Errorf("params.tls.insecureSkipVerify: with caFile the CA would be ignored; give one or the other")
		}
	}
	return nil
}

// clusters lists the bootstrap brokers of each cluster (one without clusters).
func (p *kafkaClientParams) clusters() [][]string {
	if len(p.Clusters) == 0 {
		return [][]string{p.Brokers}
	}
	out := make([][]string, len(p.Clusters))
	for i, c := range p.Clusters {
		out[i] = c.Brokers
	}
	return out
}

func (p *kafkaClientParams) health() (interval, failAfter, retry time.Duration) {
	interval, failAfter, retry = p.HealthCheckInterval.D(), p.FailureTimeout.D(), p.RetryInterval.D()
	if interval == 0 {
		interval = kafkaHealthInterval
	}
	if failAfter == 0 {
		failAfter = kafkaFailureTimeout
	}
	if retry == 0 {
		retry = kafkaRetryInterval
	}
	return interval, failAfter, retry
}

// config is the sarama configuration of a client. It reads the TLS files and
// the password's environment variable, so it runs where the task runs.
func (p *kafkaClientParams) config(clientID string) (*sarama.Config, error) {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	if p.Version != "" {
		c.Version, _ = sarama.ParseKafkaVersion(p.Version) // checked when planned
	}
	c.ClientID = "sluice"
	if p.ClientID != "" {
		c.ClientID = p.ClientID
	} else if clientID != "" {
		c.ClientID = sanitizeClientID(clientID)
	}
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	if s := p.SASL; s != nil {
		pw := s.Password
		if s.PasswordEnv != "" {
			pw = os.Getenv(s.PasswordEnv)
			if pw == "" {
				return nil, fmt.Errorf("params.sasl.passwordEnv: environment variable %s is empty or not set", s.PasswordEnv)
			}
		}
		c.Net.SASL.Enable = true
		c.Net.SASL.Handshake = true
		if c.Version.IsAtLeast(sarama.V1_0_0_0) { // SaslAuthenticate exists from Kafka 1.0
			c.Net.SASL.Version = sarama.SASLHandshakeV1
		}
		c.Net.SASL.Mechanism = sarama.SASLMechanism(s.Mechanism)
		c.Net.SASL.User, c.Net.SASL.Password = s.User, pw
		switch s.Mechanism {
		case sarama.SASLTypeSCRAMSHA256:
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
		case sarama.SASLTypeSCRAMSHA512:
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
		}
	}
	if t := p.TLS; t != nil && t.Enabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // the user asked for it
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("params.tls.caFile: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("params.tls.caFile: no PEM certificate in %s", t.CAFile)
			}
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("params.tls.certFile: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = tc
	}
	return c, nil
}

// kafkaKnown remembers, per cluster (keyed by its bootstrap list), the
// broker addresses that metadata reported. It lives as long as the process,
// so a client created after a failure — a reconnect, or a task restarted in
// the same process — can bootstrap from brokers that are still there when
// the configured bootstrap brokers are gone.
var kafkaKnown = struct {
	sync.Mutex
	m map[string][]string
}{m: map[string][]string{}}

func kafkaSeedKey(seeds []string) string { return strings.Join(seeds, ",") }

// kafkaAddrs is what a new client bootstraps from: the configured brokers,
// then the brokers known from metadata.
func kafkaAddrs(seeds []string) []string {
	kafkaKnown.Lock()
	known := kafkaKnown.m[kafkaSeedKey(seeds)]
	kafkaKnown.Unlock()
	out := append([]string(nil), seeds...)
	for _, a := range known {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// rememberBrokers records the brokers a client learnt from metadata.
func rememberBrokers(seeds []string, c sarama.Client) {
	bs := c.Brokers()
	if len(bs) == 0 {
		return
	}
	addrs := make([]string, 0, len(bs))
	for _, b := range bs {
		addrs = append(addrs, b.Addr())
	}
	sort.Strings(addrs)
	kafkaKnown.Lock()
	kafkaKnown.m[kafkaSeedKey(seeds)] = addrs
	kafkaKnown.Unlock()
}

// sanitizeClientID keeps what Kafka accepts in a client id.
func sanitizeClientID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

// kafkaOwner is the subtask that reads a partition, as in Flink's
// KafkaTopicPartitionAssigner: a topic's partitions go round-robin from a
// start index derived from the topic name. It depends only on the topic,
// the partition and the parallelism, so newly discovered partitions never
// move existing ones and a restore with another parallelism re-assigns
// deterministically.
func kafkaOwner(topic string, partition int32, parallelism int) int {
	h := fnv.New32a()
	h.Write([]byte(topic))
	start := int(h.Sum32()&0x7fffffff) % parallelism
	return (start + int(partition)) % parallelism
}

// producerIDEpoch reads the producer id and epoch of a transactional sarama
// producer. sarama does not export them, but the two-phase commit needs
// them: they are what a restore hands to EndTxn to commit a transaction that
// a crashed attempt pre-committed. The fields are read (never written) by
// reflection, from a pinned sarama version; the exactly-once tests fail on
// an upgrade that renames them.
func producerIDEpoch(p sarama.AsyncProducer) (int64, int16, error) {
	v := reflect.ValueOf(p)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return 0, 0, fmt.Errorf("kafka: unexpected producer type %T", p)
	}
	tm := v.FieldByName("txnmgr")
	for tm.IsValid() && (tm.Kind() == reflect.Pointer || tm.Kind() == reflect.Interface) {
		tm = tm.Elem()
	}
	if !tm.IsValid() || tm.Kind() != reflect.Struct {
		return 0, 0, fmt.Errorf("kafka: producer %T has no transaction manager", p)
	}
	id, ep := tm.FieldByName("producerID"), tm.FieldByName("producerEpoch")
	if !id.IsValid() || !ep.IsValid() || !id.CanInt() || !ep.CanInt() {
		return 0, 0, fmt.Errorf("kafka: cannot read the producer id of %T (sarama changed?)", p)
	}
	if id.Int() < 0 {
		return 0, 0, errors.New("kafka: producer has no producer id")
	}
	return id.Int(), int16(ep.Int()), nil
}

// txnCoordinator finds the transaction coordinator of a transactional id.
func txnCoordinator(client sarama.Client, txnID string) (*sarama.Broker, error) {
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		var b *sarama.Broker
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
			_ = client.RefreshTransactionCoordinator(txnID)
		}
		if b, err = client.TransactionCoordinator(txnID); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("kafka: transaction coordinator of %q: %w", txnID, err)
}

// endTxnResult is what the coordinator answered to an EndTxn.
type endTxnResult uint8

const (
	// txnEnded: the transaction was open under this epoch and is now ended
	// (or was already ended by an EndTxn of the same epoch).
	txnEnded endTxnResult = iota
	// txnFenced: the epoch is gone. The transaction was ended by a commit
	// followed by a new producer of the id, by a fence (InitProducerId, which
	// aborts), or by the broker on its timeout (abort): only the partitions'
	// logs tell which (txnLogOutcome).
	txnFenced
	// txnForgotten: the coordinator no longer knows the producer id
	// (INVALID_PRODUCER_ID_MAPPING), e.g. after transactional.id.expiration.ms:
	// the transaction ended long ago.
	txnForgotten
)

// endTxn commits (or aborts) the transaction that a producer with this
// transactional id, producer id and epoch left open.
func endTxn(client sarama.Client, txnID string, pid int64, epoch int16, commit bool) (endTxnResult, error) {
	for attempt := 0; attempt < 20; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
			_ = client.RefreshTransactionCoordinator(txnID)
		}
		b, err := txnCoordinator(client, txnID)
		if err != nil {
			return 0, err
		}
		resp, err := b.EndTxn(&sarama.EndTxnRequest{TransactionalID: txnID, ProducerID: pid, ProducerEpoch: epoch, TransactionResult: commit})
		if err != nil {
			_ = b.Close()
			continue
		}
		switch resp.Err {
		case sarama.ErrNoError:
			return txnEnded, nil
		case sarama.ErrProducerFenced, sarama.ErrInvalidProducerEpoch:
			return txnFenced, nil
		case sarama.ErrInvalidProducerIDMapping:
			return txnForgotten, nil
		case sarama.ErrInvalidTxnState:
			// The transaction ended otherwise (an abort) while this
			// request was on its way: the markers tell.
			return txnFenced, nil
		case sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress, sarama.ErrConcurrentTransactions:
			continue
		default:
			return 0, fmt.Errorf("kafka: EndTxn(%s, pid %d, epoch %d, commit=%v): %w", txnID, pid, epoch, commit, resp.Err)
		}
	}
	return 0, fmt.Errorf("kafka: EndTxn(%s): coordinator not available", txnID)
}

// txnOutcome is how a transaction ended, as the partitions' logs show it.
type txnOutcome uint8

const (
	txnOpen      txnOutcome = iota // no end marker (yet)
	txnCommitted                   // a commit marker
	txnAborted                     // an abort marker
	txnGone                        // its records are no longer in the log (retention), or where it wrote is not known
)

func (o txnOutcome) String() string {
	return [...]string{"open", "committed", "aborted", "unknown"}[o]
}

// kafkaTxnPart is where a transaction wrote its first record in a partition.
type kafkaTxnPart struct {
	topic     string
	partition int32
	offset    int64
}

// txnLogOutcome reads how the transaction of producer pid that wrote first
// at parts ended: in each partition, the first control batch of pid after
// the transaction's first record is the marker the coordinator wrote to end
// it (a producer id has one transaction open at a time, and the coordinator
// writes all its markers before the producer's next transaction can add a
// partition). One partition tells: the coordinator decides once, so a
// marker there is the outcome, and no marker there means the transaction
// has not ended (or is ending: its markers are being written). Each
// partition's last stable offset usually tells at once
// (stableTxnOutcome); when none does, one partition is read on from the
// transaction's first record, the one with the fewest records after it.
func txnLogOutcome(client sarama.Client, pid int64, parts []kafkaTxnPart) (txnOutcome, error) {
	type toScan struct {
		p    kafkaTxnPart
		left int64
	}
	var scan []toScan
	for _, p := range parts {
		out, ok, hwm := stableTxnOutcome(client, pid, p)
		if !ok {
			scan = append(scan, toScan{p, hwm - p.offset})
			continue
		}
		if out != txnGone {
			return out, nil
		}
	}
	sort.SliceStable(scan, func(i, j int) bool { return scan[i].left < scan[j].left })
	for _, c := range scan {
		out, err := partTxnOutcome(client, pid, c.p)
		if err != nil {
			return 0, err
		}
		if out != txnGone {
			return out, nil
		}
	}
	return txnGone, nil
}

// kafkaFetchBytes bounds one fetch of scanLog.
const kafkaFetchBytes = 1 << 20

// partTxnOutcome reads partition p from the transaction's first record on
// for its marker.
func partTxnOutcome(client sarama.Client, pid int64, p kafkaTxnPart) (txnOutcome, error) {
	out := txnOpen
	gone, err := scanLog(client, p.topic, p.partition, p.offset, func(rb *sarama.RecordBatch) bool {
		if rb.ProducerID != pid || rb.FirstOffset <= p.offset {
			return false
		}
		if m, ok := txnMarker(rb); ok {
			out = m
			return true
		}
		return false
	})
	if err != nil {
		return 0, fmt.Errorf("kafka: reading %s/%d from offset %d for the end of producer %d's transaction: %w", p.topic, p.partition, p.offset, pid, err)
	}
	if gone {
		return txnGone, nil
	}
	return out, nil
}

// stableTxnOutcome answers for partition p with one small read_committed
// fetch at the transaction's first offset when the partition's last stable
// offset (the first offset of its oldest open transaction) tells: above it,
// the transaction ended, aborted if the fetch lists it among the aborted
// transactions, else committed; at it, the transaction is still open. Below
// it, another transaction that began earlier is open, and only reading on
// (partTxnOutcome) tells: ok is false then (or when the fetch failed), with
// the partition's high watermark when known.
func stableTxnOutcome(client sarama.Client, pid int64, p kafkaTxnPart) (out txnOutcome, ok bool, hwm int64) {
	hwm = math.MaxInt64
	b, err := client.Leader(p.topic, p.partition)
	if err != nil {
		return 0, false, hwm // partTxnOutcome retries
	}
	// One batch: the broker returns the first one whatever the
	// partition's limit (and lists the aborted transactions it overlaps).
	req := &sarama.FetchRequest{Version: 4, MinBytes: 1, MaxBytes: kafkaFetchBytes, Isolation: sarama.ReadCommitted}
	req.AddBlock(p.topic, p.partition, p.offset, 1, -1)
	resp, err := b.Fetch(req)
	if err != nil {
		return 0, false, hwm
	}
	blk := resp.GetBlock(p.topic, p.partition)
	switch {
	case blk == nil:
		return 0, false, hwm
	case blk.Err == sarama.ErrOffsetOutOfRange:
		return txnGone, true, hwm
	case blk.Err != sarama.ErrNoError:
		return 0, false, hwm
	}
	hwm = blk.HighWaterMarkOffset
	switch {
	case blk.LastStableOffset == p.offset:
		return txnOpen, true, hwm
	case blk.LastStableOffset < p.offset:
		return 0, false, hwm
	}
	// The aborted transactions listed are those overlapping the batches
	// returned: this transaction's first batch must be among them.
	ours := false
	for _, rs := range blk.RecordsSet {
		if rb := rs.RecordBatch; rb != nil && rb.ProducerID == pid && rb.FirstOffset <= p.offset && p.offset <= rb.FirstOffset+int64(rb.LastOffsetDelta) {
			ours = true
		}
	}
	if !ours {
		return 0, false, hwm
	}
	for _, a := range blk.AbortedTransactions {
		// A producer id has one transaction at a time, and the record at
		// p.offset is this transaction's: an aborted transaction of pid
		// that began at or before it and reaches it (the broker lists only
		// those reaching the fetched offset) is this one.
		if a.ProducerID == pid && a.FirstOffset <= p.offset {
			return txnAborted, true, hwm
		}
	}
	return txnCommitted, true, hwm
}

// txnMarker reads a control batch's marker: its first record's key is
// version int16, type int16 (0 abort, 1 commit).
func txnMarker(rb *sarama.RecordBatch) (txnOutcome, bool) {
	if !rb.Control || len(rb.Records) == 0 || len(rb.Records[0].Key) < 4 {
		return 0, false
	}
	switch binary.BigEndian.Uint16(rb.Records[0].Key[2:4]) {
	case 0:
		return txnAborted, true
	case 1:
		return txnCommitted, true
	}
	return 0, false
}

// scanLog reads a partition's record batches from offset from up to its
// high watermark (read_uncommitted), handing each batch that ends at or
// after from to visit until visit returns true. gone means from is below
// the log start (retention deleted it).
func scanLog(client sarama.Client, topic string, partition int32, from int64, visit func(*sarama.RecordBatch) bool) (gone bool, err error) {
	off := from
	for attempt := 0; ; {
		b, err := client.Leader(topic, partition)
		var blk *sarama.FetchResponseBlock
		if err == nil {
			req := &sarama.FetchRequest{Version: 4, MinBytes: 1, MaxBytes: kafkaFetchBytes, Isolation: sarama.ReadUncommitted}
			req.AddBlock(topic, partition, off, kafkaFetchBytes, -1)
			var resp *sarama.FetchResponse
			if resp, err = b.Fetch(req); err == nil {
				if blk = resp.GetBlock(topic, partition); blk == nil {
					err = errors.New("no block in the fetch response")
				} else if blk.Err == sarama.ErrOffsetOutOfRange {
					return true, nil
				} else if blk.Err != sarama.ErrNoError {
					err = blk.Err
				}
			}
		}
		if err != nil {
			if attempt++; attempt >= 10 {
				return false, fmt.Errorf("reading %s/%d at offset %d: %w", topic, partition, off, err)
			}
			time.Sleep(100 * time.Millisecond)
			_ = client.RefreshMetadata(topic)
			continue
		}
		moved := false
		for _, rs := range blk.RecordsSet {
			rb := rs.RecordBatch
			if rb == nil {
				continue // legacy message set: not transactional
			}
			last := rb.FirstOffset + int64(rb.LastOffsetDelta)
			if last < off {
				continue
			}
			if visit(rb) {
				return false, nil
			}
			off, moved = last+1, true
		}
		if !moved {
			if off >= blk.HighWaterMarkOffset {
				return false, nil
			}
			return false, fmt.Errorf("reading %s/%d at offset %d: no complete record batch in %d bytes", topic, partition, off, kafkaFetchBytes)
		}
	}
}

// logEnds reads the end offset (high watermark) of every partition of
// topic, one ListOffsets request per leader.
func logEnds(client sarama.Client, topic string) ([]kafkaTxnPart, error) {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
			_ = client.RefreshMetadata(topic)
		}
		parts, err := client.Partitions(topic)
		if err != nil {
			last = err
			continue
		}
		type byLeader struct {
			req   *sarama.OffsetRequest
			parts []int32
		}
		reqs := map[*sarama.Broker]*byLeader{}
		last = nil
		for _, p := range parts {
			b, err := client.Leader(topic, p)
			if err != nil {
				last = err
				break
			}
			r := reqs[b]
			if r == nil {
				r = &byLeader{req: &sarama.OffsetRequest{Version: 1}}
				reqs[b] = r
			}
			r.req.AddBlock(topic, p, sarama.OffsetNewest, 1)
			r.parts = append(r.parts, p)
		}
		if last != nil {
			continue
		}
		out := make([]kafkaTxnPart, 0, len(parts))
		for b, r := range reqs {
			resp, err := b.GetAvailableOffsets(r.req)
			if err != nil {
				last = err
				break
			}
			for _, p := range r.parts {
				blk := resp.GetBlock(topic, p)
				if blk == nil || blk.Err != sarama.ErrNoError {
					last = fmt.Errorf("partition %d: %v", p, blk)
					break
				}
				out = append(out, kafkaTxnPart{topic, p, blk.Offset})
			}
		}
		if last == nil {
			sort.Slice(out, func(i, j int) bool { return out[i].partition < out[j].partition })
			return out, nil
		}
	}
	return nil, fmt.Errorf("kafka: end offsets of %s: %w", topic, last)
}

// fenceTxnID runs InitProducerId for a transactional id: the coordinator
// aborts whatever transaction the id had open and bumps its epoch. It
// returns the id's producer id and new epoch.
func fenceTxnID(client sarama.Client, txnID string, timeout time.Duration) (int64, int16, error) {
	for attempt := 0; attempt < 20; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
			_ = client.RefreshTransactionCoordinator(txnID)
		}
		b, err := txnCoordinator(client, txnID)
		if err != nil {
			return 0, 0, err
		}
		id := txnID
		resp, err := b.InitProducerID(&sarama.InitProducerIDRequest{TransactionalID: &id, TransactionTimeout: timeout, ProducerID: -1, ProducerEpoch: -1})
		if err != nil {
			_ = b.Close()
			continue
		}
		switch resp.Err {
		case sarama.ErrNoError:
			return resp.ProducerID, resp.ProducerEpoch, nil
		case sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress, sarama.ErrConcurrentTransactions:
			continue
		default:
			return 0, 0, fmt.Errorf("kafka: InitProducerId(%s): %w", txnID, resp.Err)
		}
	}
	return 0, 0, fmt.Errorf("kafka: InitProducerId(%s): coordinator not available", txnID)
}

// kafkaClusterOwner is kafkaOwner for the partitions of one cluster of a
// multi-cluster source: cluster 0 is the single-cluster assignment (so
// checkpoints of a single-cluster job keep their owners), and the other
// clusters start from another index, so a topic's partition p of each
// cluster does not land on the same subtask.
func kafkaClusterOwner(cluster int, topic string, partition int32, parallelism int) int {
	if cluster == 0 {
		return kafkaOwner(topic, partition, parallelism)
	}
	return kafkaOwner(fmt.Sprintf("%s\x00%d", topic, cluster), partition, parallelism)
}
