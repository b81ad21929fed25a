package row

import "unsafe"

// littleEndian: the machine stores a float64 as the codec does (8 bytes
// little endian), so a float column moves between memory and the wire in
// one copy instead of a conversion per value.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// float64Bytes views vs as its bytes in memory.
func float64Bytes(vs []float64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(vs))), 8*len(vs))
}
