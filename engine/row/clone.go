package row

// Clone returns a copy of b (a new batch from the pool). Strings and byte
// slices are shared: values are immutable once in a batch.
func (b *Batch) Clone() *Batch {
	c := NewBatch(b.Schema)
	for i := range b.Cols {
		src, dst := &b.Cols[i], &c.Cols[i]
		switch src.Type {
		case Int64, Timestamp:
			dst.Ints = append(dst.Ints, src.Ints...)
		case Float64:
			dst.Floats = append(dst.Floats, src.Floats...)
		case String:
			dst.Strs = append(dst.Strs, src.Strs...)
		case Bool:
			dst.Bools = append(dst.Bools, src.Bools...)
		case Bytes:
			dst.Bytes = append(dst.Bytes, src.Bytes...)
		}
	}
	c.Len = b.Len
	return c
}
