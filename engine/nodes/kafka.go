package nodes

import (
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// Shared by the kafka source and sink: client configuration, the
// partition-to-subtask assignment and the raw transaction requests used on
// restore. Both talk to brokers with github.com/IBM/sarama.

// kafkaClientParams are the params both kafka nodes accept.
type kafkaClientParams struct {
	Brokers  []string `json:"brokers"`
	ClientID string   `json:"clientId"`
	// Version is the Kafka protocol version to speak (default 2.8.0).
	Version string `json:"version"`
}

func (p *kafkaClientParams) check() error {
	if len(p.Brokers) == 0 {
		return fmt.Errorf("params.brokers: required (a list of host:port)")
	}
	for i, b := range p.Brokers {
		if !strings.Contains(b, ":") {
			return fmt.Errorf("params.brokers[%d]: %q is not host:port", i, b)
		}
	}
	if p.Version != "" {
		if _, err := sarama.ParseKafkaVersion(p.Version); err != nil {
			return fmt.Errorf("params.version: %w", err)
		}
	}
	return nil
}

func (p *kafkaClientParams) config(clientID string) *sarama.Config {
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
	return c
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

// endTxn commits (or aborts) the transaction that a producer with this
// transactional id, producer id and epoch left open. It reports done=false
// when the epoch was fenced: a later InitProducerId for the id completed
// (or aborted) whatever was open.
func endTxn(client sarama.Client, txnID string, pid int64, epoch int16, commit bool) (fenced bool, err error) {
	for attempt := 0; attempt < 20; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
			_ = client.RefreshTransactionCoordinator(txnID)
		}
		b, err := txnCoordinator(client, txnID)
		if err != nil {
			return false, err
		}
		resp, err := b.EndTxn(&sarama.EndTxnRequest{TransactionalID: txnID, ProducerID: pid, ProducerEpoch: epoch, TransactionResult: commit})
		if err != nil {
			_ = b.Close()
			continue
		}
		switch resp.Err {
		case sarama.ErrNoError:
			return false, nil
		case sarama.ErrProducerFenced, sarama.ErrInvalidProducerEpoch:
			return true, nil
		case sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress, sarama.ErrConcurrentTransactions:
			continue
		default:
			return false, fmt.Errorf("kafka: EndTxn(%s, pid %d, epoch %d, commit=%v): %w", txnID, pid, epoch, commit, resp.Err)
		}
	}
	return false, fmt.Errorf("kafka: EndTxn(%s): coordinator not available", txnID)
}

// fenceTxnID runs InitProducerId for a transactional id: the coordinator
// aborts whatever transaction the id had open and bumps its epoch.
func fenceTxnID(client sarama.Client, txnID string, timeout time.Duration) error {
	for attempt := 0; attempt < 20; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
			_ = client.RefreshTransactionCoordinator(txnID)
		}
		b, err := txnCoordinator(client, txnID)
		if err != nil {
			return err
		}
		id := txnID
		resp, err := b.InitProducerID(&sarama.InitProducerIDRequest{TransactionalID: &id, TransactionTimeout: timeout, ProducerID: -1, ProducerEpoch: -1})
		if err != nil {
			_ = b.Close()
			continue
		}
		switch resp.Err {
		case sarama.ErrNoError:
			return nil
		case sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress, sarama.ErrConcurrentTransactions:
			continue
		default:
			return fmt.Errorf("kafka: InitProducerId(%s): %w", txnID, resp.Err)
		}
	}
	return fmt.Errorf("kafka: InitProducerId(%s): coordinator not available", txnID)
}
