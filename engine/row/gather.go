package row

// AppendSelected appends the rows of src at positions sel (same schema
// layout), column by column: the typed loops a hash exchange needs to split
// a batch without per-row type switches.
func (b *Batch) AppendSelected(src *Batch, sel []int32) {
	for c := range b.Cols {
		d, s := &b.Cols[c], &src.Cols[c]
		switch d.Type {
		case Int64, Timestamp:
			for _, i := range sel {
				d.Ints = append(d.Ints, s.Ints[i])
			}
		case Float64:
			for _, i := range sel {
				d.Floats = append(d.Floats, s.Floats[i])
			}
		case String:
			for _, i := range sel {
				d.Strs = append(d.Strs, s.Strs[i])
			}
		case Bool:
			for _, i := range sel {
				d.Bools = append(d.Bools, s.Bools[i])
			}
		case Bytes:
			for _, i := range sel {
				d.Bytes = append(d.Bytes, s.Bytes[i])
			}
		}
	}
	b.Len += len(sel)
}
