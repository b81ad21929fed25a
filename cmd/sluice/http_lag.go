package main

import "net/http"

// GET /v1/kafka-lag: every Kafka source subtask's partitions with the
// offset it reads next, the partition's high watermark and the lag
// (docs/rest-api.md); an empty list when the job reads no Kafka.
func (a *jobAPI) kafkaLag(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.obs.kafkaLag())
}
