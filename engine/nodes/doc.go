// Package nodes holds the node types a job spec can name: each type decodes
// and checks its params against its input schemas (Factory.Plan) and builds
// the runtime source or operator. Built-in types register themselves here;
// a binary built on the engine can Register its own.
package nodes
