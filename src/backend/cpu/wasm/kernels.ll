; SIMD (wasm simd128) kernels for the CPU backend's cross-entropy rows and SwiGLU, compiled by build.ts
; with `llc-14 -O3 -march=wasm32 -mattr=+simd128 -filetype=obj`. Float64 lanes repeat the
; scalar code in layers.ts operation for operation (wasm has no fused multiply-add), so
; every stored fp32 value and the float64 row sum are bitwise those of the scalar loop.
target datalayout = "e-m:e-p:32:32-p10:8:8-p20:8:8-i64:64-n32:64-S128-ni:1:10:20"
target triple = "wasm32-unknown-unknown"

; p[i] = exp(p[i] - max) for i < n (n even); returns the float64 sum, added in index order.
; exp as in fast_math.ts: k = round(y log2 e) by the 1.5 * 2^52 trick, r by a Cody-Waite
; split of ln 2, degree-7 Taylor polynomial in Estrin's scheme, 2^k built from k's bits.
; Inputs below -708 (where 2^k would leave the normal range) give 0, NaN stays NaN.
; The constants come from the table %k (simd.ts EXP_TABLE, 12 pairs of doubles) loaded once
; before the loop: as immediates, V8 rebuilds every vector constant inside the loop.
define double @exp_shift_sum(float* %p, i32 %n, double %max, <2 x double>* %k) #0 {
entry:
  %mx0 = insertelement <2 x double> undef, double %max, i32 0
  %mx = shufflevector <2 x double> %mx0, <2 x double> undef, <2 x i32> zeroinitializer
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cLimit = load volatile <2 x double>, <2 x double>* %k11, align 16
  ; 2^k = bits of (t << 52) + bits of 1.0, as ((bits of t) + 1023) << 52 modulo 2^64
  %oneBits = bitcast <2 x double> %cOne to <2 x i64>
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %sum = phi double [0.0, %entry], [%sum2, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %y = fsub <2 x double> %xd, %mx
  %t0 = fmul <2 x double> %y, %cLog2e
  %t = fadd <2 x double> %t0, %cMagic
  %kf = fsub <2 x double> %t, %cMagic
  %a0 = fmul <2 x double> %kf, %cLn2Hi
  %a1 = fsub <2 x double> %y, %a0
  %a2 = fmul <2 x double> %kf, %cLn2Lo
  %r = fsub <2 x double> %a1, %a2
  %r2 = fmul <2 x double> %r, %r
  ; ((1 + r) + r2 * (0.5 + r * c3))
  %p0 = fadd <2 x double> %cOne, %r
  %p1 = fmul <2 x double> %r, %c3
  %p2 = fadd <2 x double> %cHalf, %p1
  %p3 = fmul <2 x double> %r2, %p2
  %lo = fadd <2 x double> %p0, %p3
  ; ((c4 + r * c5) + r2 * (c6 + r * c7))
  %q1 = fmul <2 x double> %r, %c5
  %q2 = fadd <2 x double> %c4, %q1
  %q3 = fmul <2 x double> %r, %c7
  %q4 = fadd <2 x double> %c6, %q3
  %q5 = fmul <2 x double> %r2, %q4
  %hi = fadd <2 x double> %q2, %q5
  %r4 = fmul <2 x double> %r2, %r2
  %h4 = fmul <2 x double> %r4, %hi
  %poly = fadd <2 x double> %lo, %h4
  %bits = bitcast <2 x double> %t to <2 x i64>
  %sh = shl <2 x i64> %bits, <i64 52, i64 52>
  %kb = add <2 x i64> %sh, %oneBits
  %pow = bitcast <2 x i64> %kb to <2 x double>
  %e0 = fmul <2 x double> %poly, %pow
  %under = fcmp olt <2 x double> %y, %cLimit
  %e = select <2 x i1> %under, <2 x double> zeroinitializer, <2 x double> %e0
  %ef = fptrunc <2 x double> %e to <2 x float>
  store <2 x float> %ef, <2 x float>* %vq, align 4
  %l0 = extractelement <2 x double> %e, i32 0
  %l1 = extractelement <2 x double> %e, i32 1
  %sum1 = fadd double %sum, %l0
  %sum2 = fadd double %sum1, %l1
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  %res = phi double [0.0, %entry], [%sum2, %loop]
  ret double %res
}

; p[i] = fp32(p[i] * s) for i < n (n even), s in float64 as in layers.ts.
define void @scale_rows(float* %p, i32 %n, double %s) #0 {
entry:
  %s0 = insertelement <2 x double> undef, double %s, i32 0
  %sv = shufflevector <2 x double> %s0, <2 x double> undef, <2 x i32> zeroinitializer
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %m = fmul <2 x double> %xd, %sv
  %mf = fptrunc <2 x double> %m to <2 x float>
  store <2 x float> %mf, <2 x float>* %vq, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}
attributes #0 = { "target-features"="+simd128" nounwind }

; 1 + exp(-g) as layers.ts onePlusExpNeg: exp as above; -g above 709.7 gives Infinity and
; below -708 gives 0 (1 + the scalar's subnormal rounds to 1 as well), NaN stays NaN.
; The constants are the callers' %k table (simd.ts SWIGLU_TABLE), loaded once before their
; loops and passed in, so no vector immediate is rebuilt per element.
define internal <2 x double> @one_plus_exp_neg(<2 x double> %g, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cUnder, <2 x double> %cOver, <2 x double> %cInf) #1 {
  %y = fneg <2 x double> %g
  %t0 = fmul <2 x double> %y, %cLog2e
  %t = fadd <2 x double> %t0, %cMagic
  %kf = fsub <2 x double> %t, %cMagic
  %a0 = fmul <2 x double> %kf, %cLn2Hi
  %a1 = fsub <2 x double> %y, %a0
  %a2 = fmul <2 x double> %kf, %cLn2Lo
  %r = fsub <2 x double> %a1, %a2
  %r2 = fmul <2 x double> %r, %r
  %p0 = fadd <2 x double> %cOne, %r
  %p1 = fmul <2 x double> %r, %c3
  %p2 = fadd <2 x double> %cHalf, %p1
  %p3 = fmul <2 x double> %r2, %p2
  %lo = fadd <2 x double> %p0, %p3
  %q1 = fmul <2 x double> %r, %c5
  %q2 = fadd <2 x double> %c4, %q1
  %q3 = fmul <2 x double> %r, %c7
  %q4 = fadd <2 x double> %c6, %q3
  %q5 = fmul <2 x double> %r2, %q4
  %hi = fadd <2 x double> %q2, %q5
  %r4 = fmul <2 x double> %r2, %r2
  %h4 = fmul <2 x double> %r4, %hi
  %poly = fadd <2 x double> %lo, %h4
  ; 2^k = bits of (t << 52) + bits of 1.0, as ((bits of t) + 1023) << 52 modulo 2^64
  %bits = bitcast <2 x double> %t to <2 x i64>
  %sh = shl <2 x i64> %bits, <i64 52, i64 52>
  %oneBits = bitcast <2 x double> %cOne to <2 x i64>
  %kb = add <2 x i64> %sh, %oneBits
  %pow = bitcast <2 x i64> %kb to <2 x double>
  %e0 = fmul <2 x double> %poly, %pow
  %under = fcmp olt <2 x double> %y, %cUnder
  %e1 = select <2 x i1> %under, <2 x double> zeroinitializer, <2 x double> %e0
  %over = fcmp ogt <2 x double> %y, %cOver
  %e = select <2 x i1> %over, <2 x double> %cInf, <2 x double> %e1
  %res = fadd <2 x double> %cOne, %e
  ret <2 x double> %res
}

; out[i] = fp32((g / (1 + exp(-g))) * up[i]) for i < n (n even), g = gate[i].
define void @swiglu_forward(float* %out, float* %gate, float* %up, i32 %n, <2 x double>* %k) #0 {
entry:
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cUnder = load volatile <2 x double>, <2 x double>* %k11, align 16
  %k12 = getelementptr <2 x double>, <2 x double>* %k, i32 12
  %cOver = load volatile <2 x double>, <2 x double>* %k12, align 16
  %k13 = getelementptr <2 x double>, <2 x double>* %k, i32 13
  %cInf = load volatile <2 x double>, <2 x double>* %k13, align 16
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %pg = getelementptr float, float* %gate, i32 %i
  %pu = getelementptr float, float* %up, i32 %i
  %po = getelementptr float, float* %out, i32 %i
  %vg = bitcast float* %pg to <2 x float>*
  %vu = bitcast float* %pu to <2 x float>*
  %vo = bitcast float* %po to <2 x float>*
  %gf = load <2 x float>, <2 x float>* %vg, align 4
  %uf = load <2 x float>, <2 x float>* %vu, align 4
  %g = fpext <2 x float> %gf to <2 x double>
  %u = fpext <2 x float> %uf to <2 x double>
  %den = call <2 x double> @one_plus_exp_neg(<2 x double> %g, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cUnder, <2 x double> %cOver, <2 x double> %cInf)
  %s = fdiv <2 x double> %g, %den
  %o = fmul <2 x double> %s, %u
  %of = fptrunc <2 x double> %o to <2 x float>
  store <2 x float> %of, <2 x float>* %vo, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}

; sig = 1 / (1 + exp(-g)); dgate = fp32(d * u * sig * (1 + g * (1 - sig))),
; dup = fp32(d * g * sig) for i < n (n even), left to right as in layers.ts.
define void @swiglu_backward(float* %dgate, float* %dup, float* %dout, float* %gate, float* %up, i32 %n, <2 x double>* %k) #0 {
entry:
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cUnder = load volatile <2 x double>, <2 x double>* %k11, align 16
  %k12 = getelementptr <2 x double>, <2 x double>* %k, i32 12
  %cOver = load volatile <2 x double>, <2 x double>* %k12, align 16
  %k13 = getelementptr <2 x double>, <2 x double>* %k, i32 13
  %cInf = load volatile <2 x double>, <2 x double>* %k13, align 16
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %pg = getelementptr float, float* %gate, i32 %i
  %pu = getelementptr float, float* %up, i32 %i
  %pd = getelementptr float, float* %dout, i32 %i
  %pdg = getelementptr float, float* %dgate, i32 %i
  %pdu = getelementptr float, float* %dup, i32 %i
  %vg = bitcast float* %pg to <2 x float>*
  %vu = bitcast float* %pu to <2 x float>*
  %vd = bitcast float* %pd to <2 x float>*
  %vdg = bitcast float* %pdg to <2 x float>*
  %vdu = bitcast float* %pdu to <2 x float>*
  %gf = load <2 x float>, <2 x float>* %vg, align 4
  %uf = load <2 x float>, <2 x float>* %vu, align 4
  %df = load <2 x float>, <2 x float>* %vd, align 4
  %g = fpext <2 x float> %gf to <2 x double>
  %u = fpext <2 x float> %uf to <2 x double>
  %d = fpext <2 x float> %df to <2 x double>
  %den = call <2 x double> @one_plus_exp_neg(<2 x double> %g, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cUnder, <2 x double> %cOver, <2 x double> %cInf)
  %sig = fdiv <2 x double> %cOne, %den
  %du0 = fmul <2 x double> %d, %u
  %du1 = fmul <2 x double> %du0, %sig
  %om = fsub <2 x double> %cOne, %sig
  %gom = fmul <2 x double> %g, %om
  %f = fadd <2 x double> %cOne, %gom
  %dgv = fmul <2 x double> %du1, %f
  %dg0 = fmul <2 x double> %d, %g
  %dupv = fmul <2 x double> %dg0, %sig
  %dgf = fptrunc <2 x double> %dgv to <2 x float>
  %duf = fptrunc <2 x double> %dupv to <2 x float>
  store <2 x float> %dgf, <2 x float>* %vdg, align 4
  store <2 x float> %duf, <2 x float>* %vdu, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}
attributes #1 = { alwaysinline "target-features"="+simd128" nounwind }

; out[0], out[1] = the maxima of p's even and odd elements for i < n (n even), each a
; running `if (x > m) m = x` from -Infinity as in layers.ts (NaN never replaces m).
define void @row_max2(float* %p, i32 %n, double* %out) #0 {
entry:
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %m = phi <2 x double> [<double 0xFFF0000000000000, double 0xFFF0000000000000>, %entry], [%m1, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %gt = fcmp ogt <2 x double> %xd, %m
  %m1 = select <2 x i1> %gt, <2 x double> %xd, <2 x double> %m
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  %res = phi <2 x double> [<double 0xFFF0000000000000, double 0xFFF0000000000000>, %entry], [%m1, %loop]
  %vo = bitcast double* %out to <2 x double>*
  store <2 x double> %res, <2 x double>* %vo, align 8
  ret void
}

; e^y for two float64 lanes as attention.ts attnExpRange: k = round(y log2 e) by the 1.5 * 2^52 trick,
; Cody-Waite r, the degree-7 Taylor polynomial in Horner's scheme, times 2^k (POW2[k + 1075]);
; y below -745.2 gives 0 and NaN stays NaN. 2^k is applied as two exact powers of two,
; 2^floor(k/2) then 2^(k - floor(k/2)): the first product is exact (normal), the second rounds
; once, so subnormal results round exactly as the single product by a subnormal 2^k does
; (k = -1075, where POW2 holds 0, gives 0). For y <= 709 (every caller's y is at most about
; 0). The constants are the callers' table (simd.ts ATTN_TABLE), loaded before their loops.
define internal <2 x double> @attn_exp2(<2 x double> %y, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cLimit, <2 x double> %cBias, <2 x double> %cKmin) #1 {
  %magicBits = bitcast <2 x double> %cMagic to <2 x i64>
  %bias = bitcast <2 x double> %cBias to <2 x i64>
  %kmin = bitcast <2 x double> %cKmin to <2 x i64>
  %t0 = fmul <2 x double> %y, %cLog2e
  %t = fadd <2 x double> %t0, %cMagic
  %kf = fsub <2 x double> %t, %cMagic
  %a0 = fmul <2 x double> %kf, %cLn2Hi
  %a1 = fsub <2 x double> %y, %a0
  %a2 = fmul <2 x double> %kf, %cLn2Lo
  %r = fsub <2 x double> %a1, %a2
  ; 1 + r (1 + r (0.5 + r (c3 + r (c4 + r (c5 + r (c6 + r c7))))))
  %h7 = fmul <2 x double> %r, %c7
  %h6 = fadd <2 x double> %c6, %h7
  %h6r = fmul <2 x double> %r, %h6
  %h5 = fadd <2 x double> %c5, %h6r
  %h5r = fmul <2 x double> %r, %h5
  %h4 = fadd <2 x double> %c4, %h5r
  %h4r = fmul <2 x double> %r, %h4
  %h3 = fadd <2 x double> %c3, %h4r
  %h3r = fmul <2 x double> %r, %h3
  %h2 = fadd <2 x double> %cHalf, %h3r
  %h2r = fmul <2 x double> %r, %h2
  %h1 = fadd <2 x double> %cOne, %h2r
  %h1r = fmul <2 x double> %r, %h1
  %poly = fadd <2 x double> %cOne, %h1r
  ; k = bits(t) - bits(1.5 * 2^52); 2^k1 * 2^k2 with k1 = k >> 1, k2 = k - k1
  %tb = bitcast <2 x double> %t to <2 x i64>
  %kk = sub <2 x i64> %tb, %magicBits
  %ka = ashr <2 x i64> %kk, <i64 1, i64 1>
  %kb = sub <2 x i64> %kk, %ka
  %ea = add <2 x i64> %ka, %bias
  %eb = add <2 x i64> %kb, %bias
  %pa = shl <2 x i64> %ea, <i64 52, i64 52>
  %pb = shl <2 x i64> %eb, <i64 52, i64 52>
  %powa = bitcast <2 x i64> %pa to <2 x double>
  %powb = bitcast <2 x i64> %pb to <2 x double>
  %e0a = fmul <2 x double> %poly, %powa
  %e0 = fmul <2 x double> %e0a, %powb
  ; k < -1074 (POW2 holds 0 there) gives 0
  %tiny = icmp slt <2 x i64> %kk, %kmin
  %e1 = select <2 x i1> %tiny, <2 x double> zeroinitializer, <2 x double> %e0
  ; y >= -745.2: e; NaN: y; else 0
  %inRange = fcmp oge <2 x double> %y, %cLimit
  %isNan = fcmp uno <2 x double> %y, %y
  %low = select <2 x i1> %isNan, <2 x double> %y, <2 x double> zeroinitializer
  %e = select <2 x i1> %inRange, <2 x double> %e1, <2 x double> %low
  ret <2 x double> %e
}

; Attention softmax row (attention.ts attentionForward): p[i] = fp32(exp(fp64(p[i]) * scale -
; max)) for i < n (n even), returning the float64 sum of the exps (before rounding) added in
; index order; exp as @attn_exp2. Constants: the table %k (simd.ts ATTN_TABLE).
define double @attn_exp_row(float* %p, i32 %n, double %scale, double %max, <2 x double>* %k) #0 {
entry:
  %sc0 = insertelement <2 x double> undef, double %scale, i32 0
  %sc = shufflevector <2 x double> %sc0, <2 x double> undef, <2 x i32> zeroinitializer
  %mx0 = insertelement <2 x double> undef, double %max, i32 0
  %mx = shufflevector <2 x double> %mx0, <2 x double> undef, <2 x i32> zeroinitializer
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cLimit = load volatile <2 x double>, <2 x double>* %k11, align 16
  %k12 = getelementptr <2 x double>, <2 x double>* %k, i32 12
  %cBias = load volatile <2 x double>, <2 x double>* %k12, align 16
  %k13 = getelementptr <2 x double>, <2 x double>* %k, i32 13
  %cKmin = load volatile <2 x double>, <2 x double>* %k13, align 16
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %sum = phi double [0.0, %entry], [%sum2, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %xs = fmul <2 x double> %xd, %sc
  %y = fsub <2 x double> %xs, %mx
  %e = call <2 x double> @attn_exp2(<2 x double> %y, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cLimit, <2 x double> %cBias, <2 x double> %cKmin)
  %ef = fptrunc <2 x double> %e to <2 x float>
  store <2 x float> %ef, <2 x float>* %vq, align 4
  %l0 = extractelement <2 x double> %e, i32 0
  %l1 = extractelement <2 x double> %e, i32 1
  %sum1 = fadd double %sum, %l0
  %sum2 = fadd double %sum1, %l1
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  %res = phi double [0.0, %entry], [%sum2, %loop]
  ret double %res
}

; ---- Small matrix-vector products (gemv_rows, gemv_cols): decode attention's products over
; the KV cache (gemm.ts sends strided M = 1 products with N * K <= 65536 here, from the
; op-by-op path and the fused decoder alike). fp32 throughout, every product and sum rounded to fp32 as the
; TypeScript reference in tests/cpu_small_gemv_test.ts does it in the same order.

; (l0 + l1) + (l2 + l3) of a 4-lane accumulator.
define internal float @hsum4(<4 x float> %v) #1 {
  %l0 = extractelement <4 x float> %v, i32 0
  %l1 = extractelement <4 x float> %v, i32 1
  %l2 = extractelement <4 x float> %v, i32 2
  %l3 = extractelement <4 x float> %v, i32 3
  %s01 = fadd float %l0, %l1
  %s23 = fadd float %l2, %l3
  %s = fadd float %s01, %s23
  ret float %s
}

; y[i] = s, or y[i] + s when acc != 0.
define internal void @put1(float* %y, i32 %i, float %s, i32 %acc) #1 {
entry:
  %p = getelementptr float, float* %y, i32 %i
  %isacc = icmp ne i32 %acc, 0
  br i1 %isacc, label %add, label %set
add:
  %old = load float, float* %p, align 4
  %sum = fadd float %old, %s
  store float %sum, float* %p, align 4
  ret void
set:
  store float %s, float* %p, align 4
  ret void
}

; y[i..i+4) = v, or y[i..i+4) + v when acc != 0.
define internal void @put4(float* %y, i32 %i, <4 x float> %v, i32 %acc) #1 {
entry:
  %p = getelementptr float, float* %y, i32 %i
  %pv = bitcast float* %p to <4 x float>*
  %isacc = icmp ne i32 %acc, 0
  br i1 %isacc, label %add, label %set
add:
  %old = load <4 x float>, <4 x float>* %pv, align 4
  %sum = fadd <4 x float> %old, %v
  store <4 x float> %sum, <4 x float>* %pv, align 4
  ret void
set:
  store <4 x float> %v, <4 x float>* %pv, align 4
  ret void
}

; y[r] (+)= sum_j x[j] w[r * ldw + j] for r < n, j < k. Per row: four fp32 lanes sum the
; products of j = 0, 1, 2, 3 mod 4 up to k4 = k & ~3 in order, the row sum is
; (l0 + l1) + (l2 + l3), then the products of j = k4..k-1 are added one by one. Rows run four
; at a time (four independent sums, x loaded once, the four row sums formed together by lane
; shuffles: the same additions) and then one at a time; the grouping does not change a row's
; result.
define void @gemv_rows(float* %w, i32 %ldw, float* %x, float* %y, i32 %n, i32 %k, i32 %acc) #2 {
entry:
  %k4 = and i32 %k, -4
  %n4 = and i32 %n, -4
  %hasv = icmp sgt i32 %k4, 0
  %hast = icmp slt i32 %k4, %k
  br label %blk
blk:
  %r = phi i32 [0, %entry], [%rn, %btdone]
  %bmore = icmp slt i32 %r, %n4
  br i1 %bmore, label %bbody, label %one
bbody:
  %o0 = mul i32 %r, %ldw
  %o1 = add i32 %o0, %ldw
  %o2 = add i32 %o1, %ldw
  %o3 = add i32 %o2, %ldw
  %w0 = getelementptr float, float* %w, i32 %o0
  %w1 = getelementptr float, float* %w, i32 %o1
  %w2 = getelementptr float, float* %w, i32 %o2
  %w3 = getelementptr float, float* %w, i32 %o3
  br i1 %hasv, label %bv, label %bvdone
bv:
  %i = phi i32 [0, %bbody], [%i1, %bv]
  %a0 = phi <4 x float> [zeroinitializer, %bbody], [%a0n, %bv]
  %a1 = phi <4 x float> [zeroinitializer, %bbody], [%a1n, %bv]
  %a2 = phi <4 x float> [zeroinitializer, %bbody], [%a2n, %bv]
  %a3 = phi <4 x float> [zeroinitializer, %bbody], [%a3n, %bv]
  %px = getelementptr float, float* %x, i32 %i
  %pxv = bitcast float* %px to <4 x float>*
  %xv = load <4 x float>, <4 x float>* %pxv, align 4
  %pw0 = getelementptr float, float* %w0, i32 %i
  %pw0v = bitcast float* %pw0 to <4 x float>*
  %wv0 = load <4 x float>, <4 x float>* %pw0v, align 4
  %pw1 = getelementptr float, float* %w1, i32 %i
  %pw1v = bitcast float* %pw1 to <4 x float>*
  %wv1 = load <4 x float>, <4 x float>* %pw1v, align 4
  %pw2 = getelementptr float, float* %w2, i32 %i
  %pw2v = bitcast float* %pw2 to <4 x float>*
  %wv2 = load <4 x float>, <4 x float>* %pw2v, align 4
  %pw3 = getelementptr float, float* %w3, i32 %i
  %pw3v = bitcast float* %pw3 to <4 x float>*
  %wv3 = load <4 x float>, <4 x float>* %pw3v, align 4
  %p0 = fmul <4 x float> %xv, %wv0
  %a0n = fadd <4 x float> %a0, %p0
  %p1 = fmul <4 x float> %xv, %wv1
  %a1n = fadd <4 x float> %a1, %p1
  %p2 = fmul <4 x float> %xv, %wv2
  %a2n = fadd <4 x float> %a2, %p2
  %p3 = fmul <4 x float> %xv, %wv3
  %a3n = fadd <4 x float> %a3, %p3
  %i1 = add i32 %i, 4
  %ci = icmp slt i32 %i1, %k4
  br i1 %ci, label %bv, label %bvdone
bvdone:
  %f0 = phi <4 x float> [zeroinitializer, %bbody], [%a0n, %bv]
  %f1 = phi <4 x float> [zeroinitializer, %bbody], [%a1n, %bv]
  %f2 = phi <4 x float> [zeroinitializer, %bbody], [%a2n, %bv]
  %f3 = phi <4 x float> [zeroinitializer, %bbody], [%a3n, %bv]
  ; the four row sums (l0 + l1) + (l2 + l3) at once: pairs of lanes, then pairs of pairs
  %u01 = shufflevector <4 x float> %f0, <4 x float> %f1, <4 x i32> <i32 0, i32 4, i32 2, i32 6>
  %v01 = shufflevector <4 x float> %f0, <4 x float> %f1, <4 x i32> <i32 1, i32 5, i32 3, i32 7>
  %s01 = fadd <4 x float> %u01, %v01
  %u23 = shufflevector <4 x float> %f2, <4 x float> %f3, <4 x i32> <i32 0, i32 4, i32 2, i32 6>
  %v23 = shufflevector <4 x float> %f2, <4 x float> %f3, <4 x i32> <i32 1, i32 5, i32 3, i32 7>
  %s23 = fadd <4 x float> %u23, %v23
  %lo = shufflevector <4 x float> %s01, <4 x float> %s23, <4 x i32> <i32 0, i32 1, i32 4, i32 5>
  %hi = shufflevector <4 x float> %s01, <4 x float> %s23, <4 x i32> <i32 2, i32 3, i32 6, i32 7>
  %h4 = fadd <4 x float> %lo, %hi
  br i1 %hast, label %bt, label %btdone
bt:
  %j = phi i32 [%k4, %bvdone], [%j1, %bt]
  %t = phi <4 x float> [%h4, %bvdone], [%tn, %bt]
  %pxj = getelementptr float, float* %x, i32 %j
  %xj = load float, float* %pxj, align 4
  %xj0 = insertelement <4 x float> undef, float %xj, i32 0
  %xjs = shufflevector <4 x float> %xj0, <4 x float> undef, <4 x i32> zeroinitializer
  %pw0j = getelementptr float, float* %w0, i32 %j
  %w0j = load float, float* %pw0j, align 4
  %pw1j = getelementptr float, float* %w1, i32 %j
  %w1j = load float, float* %pw1j, align 4
  %pw2j = getelementptr float, float* %w2, i32 %j
  %w2j = load float, float* %pw2j, align 4
  %pw3j = getelementptr float, float* %w3, i32 %j
  %w3j = load float, float* %pw3j, align 4
  %wj0 = insertelement <4 x float> undef, float %w0j, i32 0
  %wj1 = insertelement <4 x float> %wj0, float %w1j, i32 1
  %wj2 = insertelement <4 x float> %wj1, float %w2j, i32 2
  %wj = insertelement <4 x float> %wj2, float %w3j, i32 3
  %q = fmul <4 x float> %xjs, %wj
  %tn = fadd <4 x float> %t, %q
  %j1 = add i32 %j, 1
  %cj = icmp slt i32 %j1, %k
  br i1 %cj, label %bt, label %btdone
btdone:
  %u = phi <4 x float> [%h4, %bvdone], [%tn, %bt]
  call void @put4(float* %y, i32 %r, <4 x float> %u, i32 %acc)
  %rn = add i32 %r, 4
  br label %blk
one:
  %s = phi i32 [%r, %blk], [%sn, %otdone]
  %smore = icmp slt i32 %s, %n
  br i1 %smore, label %obody, label %done
obody:
  %oo = mul i32 %s, %ldw
  %ws = getelementptr float, float* %w, i32 %oo
  br i1 %hasv, label %ov, label %ovdone
ov:
  %oi = phi i32 [0, %obody], [%oi1, %ov]
  %oa = phi <4 x float> [zeroinitializer, %obody], [%oan, %ov]
  %opx = getelementptr float, float* %x, i32 %oi
  %opxv = bitcast float* %opx to <4 x float>*
  %oxv = load <4 x float>, <4 x float>* %opxv, align 4
  %opw = getelementptr float, float* %ws, i32 %oi
  %opwv = bitcast float* %opw to <4 x float>*
  %owv = load <4 x float>, <4 x float>* %opwv, align 4
  %op = fmul <4 x float> %oxv, %owv
  %oan = fadd <4 x float> %oa, %op
  %oi1 = add i32 %oi, 4
  %oci = icmp slt i32 %oi1, %k4
  br i1 %oci, label %ov, label %ovdone
ovdone:
  %of = phi <4 x float> [zeroinitializer, %obody], [%oan, %ov]
  %os = call float @hsum4(<4 x float> %of)
  br i1 %hast, label %ot, label %otdone
ot:
  %oj = phi i32 [%k4, %ovdone], [%oj1, %ot]
  %ot0 = phi float [%os, %ovdone], [%ot0n, %ot]
  %opxj = getelementptr float, float* %x, i32 %oj
  %oxj = load float, float* %opxj, align 4
  %opwj = getelementptr float, float* %ws, i32 %oj
  %owj = load float, float* %opwj, align 4
  %oq = fmul float %oxj, %owj
  %ot0n = fadd float %ot0, %oq
  %oj1 = add i32 %oj, 1
  %ocj = icmp slt i32 %oj1, %k
  br i1 %ocj, label %ot, label %otdone
otdone:
  %ou = phi float [%os, %ovdone], [%ot0n, %ot]
  call void @put1(float* %y, i32 %s, float %ou, i32 %acc)
  %sn = add i32 %s, 1
  br label %one
done:
  ret void
}

; y[c] (+)= sum_j x[j] b[j * ldb + c] for c < n, j < k: each column's products added in j
; order from 0 (fp32). Columns run eight at a time (two 4-lane sums), then one at a time.
define void @gemv_cols(float* %b, i32 %ldb, float* %x, float* %y, i32 %n, i32 %k, i32 %acc) #2 {
entry:
  %n8 = and i32 %n, -8
  %hask = icmp sgt i32 %k, 0
  br label %blk
blk:
  %c = phi i32 [0, %entry], [%cn, %bdone]
  %bmore = icmp slt i32 %c, %n8
  br i1 %bmore, label %bbody, label %one
bbody:
  %bc = getelementptr float, float* %b, i32 %c
  br i1 %hask, label %bl, label %bdone
bl:
  %i = phi i32 [0, %bbody], [%i1, %bl]
  %off = phi i32 [0, %bbody], [%offn, %bl]
  %a0 = phi <4 x float> [zeroinitializer, %bbody], [%a0n, %bl]
  %a1 = phi <4 x float> [zeroinitializer, %bbody], [%a1n, %bl]
  %px = getelementptr float, float* %x, i32 %i
  %xi = load float, float* %px, align 4
  %xs0 = insertelement <4 x float> undef, float %xi, i32 0
  %xs = shufflevector <4 x float> %xs0, <4 x float> undef, <4 x i32> zeroinitializer
  %pb0 = getelementptr float, float* %bc, i32 %off
  %pb0v = bitcast float* %pb0 to <4 x float>*
  %v0 = load <4 x float>, <4 x float>* %pb0v, align 4
  %pb1 = getelementptr float, float* %pb0, i32 4
  %pb1v = bitcast float* %pb1 to <4 x float>*
  %v1 = load <4 x float>, <4 x float>* %pb1v, align 4
  %p0 = fmul <4 x float> %xs, %v0
  %a0n = fadd <4 x float> %a0, %p0
  %p1 = fmul <4 x float> %xs, %v1
  %a1n = fadd <4 x float> %a1, %p1
  %i1 = add i32 %i, 1
  %offn = add i32 %off, %ldb
  %ci = icmp slt i32 %i1, %k
  br i1 %ci, label %bl, label %bdone
bdone:
  %f0 = phi <4 x float> [zeroinitializer, %bbody], [%a0n, %bl]
  %f1 = phi <4 x float> [zeroinitializer, %bbody], [%a1n, %bl]
  call void @put4(float* %y, i32 %c, <4 x float> %f0, i32 %acc)
  %c4 = add i32 %c, 4
  call void @put4(float* %y, i32 %c4, <4 x float> %f1, i32 %acc)
  %cn = add i32 %c, 8
  br label %blk
one:
  %s = phi i32 [%c, %blk], [%sn, %odone]
  %smore = icmp slt i32 %s, %n
  br i1 %smore, label %obody, label %done
obody:
  %bs = getelementptr float, float* %b, i32 %s
  br i1 %hask, label %ol, label %odone
ol:
  %oi = phi i32 [0, %obody], [%oi1, %ol]
  %ooff = phi i32 [0, %obody], [%ooffn, %ol]
  %oa = phi float [0.0, %obody], [%oan, %ol]
  %opx = getelementptr float, float* %x, i32 %oi
  %oxi = load float, float* %opx, align 4
  %opb = getelementptr float, float* %bs, i32 %ooff
  %ob = load float, float* %opb, align 4
  %op = fmul float %oxi, %ob
  %oan = fadd float %oa, %op
  %oi1 = add i32 %oi, 1
  %ooffn = add i32 %ooff, %ldb
  %oci = icmp slt i32 %oi1, %k
  br i1 %oci, label %ol, label %odone
odone:
  %ou = phi float [0.0, %obody], [%oan, %ol]
  call void @put1(float* %y, i32 %s, float %ou, i32 %acc)
  %sn = add i32 %s, 1
  br label %one
done:
  ret void
}
; "no-builtins": opt would otherwise turn the k = 0 case (rows of zeros) into a memset call,
; which the module cannot import.
attributes #2 = { "target-features"="+simd128" "no-builtins" nounwind }

; Decode attention of one sequence, all nh heads in one call (the fused decoder's, bitwise its
; per-head TypeScript path and attention.ts): for head h, reading kv head h / group of the
; caches kc, vc (rows ldk apart, nk of them): s(nk) = K_h q_h (gemv_rows); m = the running
; `if (s > m) m = s` maximum from -Infinity; max = fp64(m) * scale; s[nk] = -Infinity (a pad,
; its exp is 0 and adds +0 to the sum) so attn_exp_row runs on nk rounded up to even;
; o_h(hs) = exp(s) V_h (gemv_cols), then o_h *= 1 / sum (scale_rows). hs even; s holds nk + 2.
define void @attn_decode(float* %q, float* %kc, float* %vc, i32 %ldk, float* %s, float* %o, i32 %nk, i32 %nh, i32 %group, i32 %hs, double %scale, <2 x double>* %tab) #2 {
entry:
  %nk1 = add i32 %nk, 1
  %nke = and i32 %nk1, -2
  %pad = getelementptr float, float* %s, i32 %nk
  br label %head
head:
  %h = phi i32 [0, %entry], [%h1, %mdone]
  %more = icmp slt i32 %h, %nh
  br i1 %more, label %hbody, label %done
hbody:
  %kvh = udiv i32 %h, %group
  %koff = mul i32 %kvh, %hs
  %kh = getelementptr float, float* %kc, i32 %koff
  %vh = getelementptr float, float* %vc, i32 %koff
  %qoff = mul i32 %h, %hs
  %qh = getelementptr float, float* %q, i32 %qoff
  %oh = getelementptr float, float* %o, i32 %qoff
  call void @gemv_rows(float* %kh, i32 %ldk, float* %qh, float* %s, i32 %nk, i32 %hs, i32 0)
  br label %mloop
mloop:
  %j = phi i32 [0, %hbody], [%j1, %mloop]
  %m = phi float [0xFFF0000000000000, %hbody], [%m1, %mloop]
  %pj = getelementptr float, float* %s, i32 %j
  %sj = load float, float* %pj, align 4
  %gt = fcmp ogt float %sj, %m
  %m1 = select i1 %gt, float %sj, float %m
  %j1 = add i32 %j, 1
  %cj = icmp slt i32 %j1, %nk
  br i1 %cj, label %mloop, label %mdone
mdone:
  %md = fpext float %m1 to double
  %max = fmul double %md, %scale
  store float 0xFFF0000000000000, float* %pad, align 4
  %sum = call double @attn_exp_row(float* %s, i32 %nke, double %scale, double %max, <2 x double>* %tab)
  call void @gemv_cols(float* %vh, i32 %ldk, float* %s, float* %oh, i32 %hs, i32 %nk, i32 0)
  %inv = fdiv double 1.0, %sum
  call void @scale_rows(float* %oh, i32 %hs, double %inv)
  %h1 = add i32 %h, 1
  br label %head
done:
  ret void
}

; Attention backward row (attention.ts attentionBackward): with P = exp(fp64(p[i]) * scale - l)
; (as @attn_exp2; l the row's log-sum-exp), p[i] = fp32(P) and dp[i] = fp32((P * (fp64(dp[i]) -
; D)) * scale) for i < n (n even). Constants: the table %k (simd.ts ATTN_TABLE).
define void @attn_bwd_row(float* %p, float* %dp, i32 %n, double %scale, double %l, double %D, <2 x double>* %k) #0 {
entry:
  %sc0 = insertelement <2 x double> undef, double %scale, i32 0
  %sc = shufflevector <2 x double> %sc0, <2 x double> undef, <2 x i32> zeroinitializer
  %l0 = insertelement <2 x double> undef, double %l, i32 0
  %lv = shufflevector <2 x double> %l0, <2 x double> undef, <2 x i32> zeroinitializer
  %D0 = insertelement <2 x double> undef, double %D, i32 0
  %Dv = shufflevector <2 x double> %D0, <2 x double> undef, <2 x i32> zeroinitializer
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %cLog2e = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %cMagic = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %cLn2Hi = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %cLn2Lo = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %cOne = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %c3 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %cHalf = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %c4 = load volatile <2 x double>, <2 x double>* %k7, align 16
  %k8 = getelementptr <2 x double>, <2 x double>* %k, i32 8
  %c5 = load volatile <2 x double>, <2 x double>* %k8, align 16
  %k9 = getelementptr <2 x double>, <2 x double>* %k, i32 9
  %c6 = load volatile <2 x double>, <2 x double>* %k9, align 16
  %k10 = getelementptr <2 x double>, <2 x double>* %k, i32 10
  %c7 = load volatile <2 x double>, <2 x double>* %k10, align 16
  %k11 = getelementptr <2 x double>, <2 x double>* %k, i32 11
  %cLimit = load volatile <2 x double>, <2 x double>* %k11, align 16
  %k12 = getelementptr <2 x double>, <2 x double>* %k, i32 12
  %cBias = load volatile <2 x double>, <2 x double>* %k12, align 16
  %k13 = getelementptr <2 x double>, <2 x double>* %k, i32 13
  %cKmin = load volatile <2 x double>, <2 x double>* %k13, align 16
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %q = getelementptr float, float* %p, i32 %i
  %vq = bitcast float* %q to <2 x float>*
  %x = load <2 x float>, <2 x float>* %vq, align 4
  %g = getelementptr float, float* %dp, i32 %i
  %vg = bitcast float* %g to <2 x float>*
  %dx = load <2 x float>, <2 x float>* %vg, align 4
  %xd = fpext <2 x float> %x to <2 x double>
  %xs = fmul <2 x double> %xd, %sc
  %y = fsub <2 x double> %xs, %lv
  %e = call <2 x double> @attn_exp2(<2 x double> %y, <2 x double> %cLog2e, <2 x double> %cMagic, <2 x double> %cLn2Hi, <2 x double> %cLn2Lo, <2 x double> %cOne, <2 x double> %c3, <2 x double> %cHalf, <2 x double> %c4, <2 x double> %c5, <2 x double> %c6, <2 x double> %c7, <2 x double> %cLimit, <2 x double> %cBias, <2 x double> %cKmin)
  %ef = fptrunc <2 x double> %e to <2 x float>
  store <2 x float> %ef, <2 x float>* %vq, align 4
  %dd = fpext <2 x float> %dx to <2 x double>
  %dm = fsub <2 x double> %dd, %Dv
  %ds0 = fmul <2 x double> %e, %dm
  %ds = fmul <2 x double> %ds0, %sc
  %dsf = fptrunc <2 x double> %ds to <2 x float>
  store <2 x float> %dsf, <2 x float>* %vg, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}

; ---- AdamW (adamw.ts adamwStep): the TypeScript loop's float64 operations in its order, each
; Math.fround a demote to fp32 (and a promote back where the value goes on). For i < n (n even):
;   p = fr(p * decay); m = fr(fr(m * b1) + g * a1); v = fr(fr(v * b2) + fr(g * g) * a2)
;   p = fr(p - stepSize * (m / fr(fr(sqrt(v) / bc2Sqrt) + eps)))
; The table %k holds decay, b1, a1, b2, a2, bc2Sqrt, eps, stepSize (each in both lanes).

define internal <2 x double> @fr2(<2 x double> %x) #1 {
  %f = fptrunc <2 x double> %x to <2 x float>
  %d = fpext <2 x float> %f to <2 x double>
  ret <2 x double> %d
}

define void @adamw_step(float* %p, float* %g, float* %m, float* %v, i32 %n, <2 x double>* %k) #0 {
entry:
  %k0 = getelementptr <2 x double>, <2 x double>* %k, i32 0
  %decay = load volatile <2 x double>, <2 x double>* %k0, align 16
  %k1 = getelementptr <2 x double>, <2 x double>* %k, i32 1
  %b1 = load volatile <2 x double>, <2 x double>* %k1, align 16
  %k2 = getelementptr <2 x double>, <2 x double>* %k, i32 2
  %a1 = load volatile <2 x double>, <2 x double>* %k2, align 16
  %k3 = getelementptr <2 x double>, <2 x double>* %k, i32 3
  %b2 = load volatile <2 x double>, <2 x double>* %k3, align 16
  %k4 = getelementptr <2 x double>, <2 x double>* %k, i32 4
  %a2 = load volatile <2 x double>, <2 x double>* %k4, align 16
  %k5 = getelementptr <2 x double>, <2 x double>* %k, i32 5
  %bc2 = load volatile <2 x double>, <2 x double>* %k5, align 16
  %k6 = getelementptr <2 x double>, <2 x double>* %k, i32 6
  %eps = load volatile <2 x double>, <2 x double>* %k6, align 16
  %k7 = getelementptr <2 x double>, <2 x double>* %k, i32 7
  %step = load volatile <2 x double>, <2 x double>* %k7, align 16
  %c = icmp sgt i32 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i32 [0, %entry], [%i1, %loop]
  %pp = getelementptr float, float* %p, i32 %i
  %pg = getelementptr float, float* %g, i32 %i
  %pm = getelementptr float, float* %m, i32 %i
  %pv = getelementptr float, float* %v, i32 %i
  %vp = bitcast float* %pp to <2 x float>*
  %vg = bitcast float* %pg to <2 x float>*
  %vm = bitcast float* %pm to <2 x float>*
  %vv = bitcast float* %pv to <2 x float>*
  %pf = load <2 x float>, <2 x float>* %vp, align 4
  %gf = load <2 x float>, <2 x float>* %vg, align 4
  %mf = load <2 x float>, <2 x float>* %vm, align 4
  %vf = load <2 x float>, <2 x float>* %vv, align 4
  %pd = fpext <2 x float> %pf to <2 x double>
  %gd = fpext <2 x float> %gf to <2 x double>
  %md = fpext <2 x float> %mf to <2 x double>
  %vd = fpext <2 x float> %vf to <2 x double>
  %p0 = fmul <2 x double> %pd, %decay
  %p1 = call <2 x double> @fr2(<2 x double> %p0)
  %m0 = fmul <2 x double> %md, %b1
  %m1 = call <2 x double> @fr2(<2 x double> %m0)
  %ga = fmul <2 x double> %gd, %a1
  %m2 = fadd <2 x double> %m1, %ga
  %mi = fptrunc <2 x double> %m2 to <2 x float>
  %mid = fpext <2 x float> %mi to <2 x double>
  %v0 = fmul <2 x double> %vd, %b2
  %v1 = call <2 x double> @fr2(<2 x double> %v0)
  %gg = fmul <2 x double> %gd, %gd
  %gg1 = call <2 x double> @fr2(<2 x double> %gg)
  %gga = fmul <2 x double> %gg1, %a2
  %v2 = fadd <2 x double> %v1, %gga
  %vi = fptrunc <2 x double> %v2 to <2 x float>
  %vid = fpext <2 x float> %vi to <2 x double>
  store <2 x float> %mi, <2 x float>* %vm, align 4
  store <2 x float> %vi, <2 x float>* %vv, align 4
  %sq = call <2 x double> @llvm.sqrt.v2f64(<2 x double> %vid)
  %q = fdiv <2 x double> %sq, %bc2
  %q1 = call <2 x double> @fr2(<2 x double> %q)
  %de = fadd <2 x double> %q1, %eps
  %den = call <2 x double> @fr2(<2 x double> %de)
  %r = fdiv <2 x double> %mid, %den
  %u = fmul <2 x double> %step, %r
  %pn = fsub <2 x double> %p1, %u
  %pnf = fptrunc <2 x double> %pn to <2 x float>
  store <2 x float> %pnf, <2 x float>* %vp, align 4
  %i1 = add i32 %i, 2
  %more = icmp slt i32 %i1, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}

declare <2 x double> @llvm.sqrt.v2f64(<2 x double>)

; ---- Seeded normal draws (params/random.ts fillNormal): sfc32 and Box-Muller, four pairs at a
; time (<4 x double> becomes two f64x2 ops side by side, so the halves' chains of dependent
; operations may overlap; measured on Zen 5, it runs no faster than two pairs per iteration).

; One sfc32 step on the state s[0..3] = a, b, c, d (random.ts #nextU32): returns t.
define internal i32 @sfc32_next(i32* %s) #1 {
  %pa = getelementptr i32, i32* %s, i32 0
  %pb = getelementptr i32, i32* %s, i32 1
  %pc = getelementptr i32, i32* %s, i32 2
  %pd = getelementptr i32, i32* %s, i32 3
  %a = load i32, i32* %pa
  %b = load i32, i32* %pb
  %c = load i32, i32* %pc
  %d = load i32, i32* %pd
  %ab = add i32 %a, %b
  %t = add i32 %ab, %d
  %d1 = add i32 %d, 1
  %b9 = lshr i32 %b, 9
  %a1 = xor i32 %b, %b9
  %c3 = shl i32 %c, 3
  %b1 = add i32 %c, %c3
  %cl = shl i32 %c, 21
  %cr = lshr i32 %c, 11
  %rot = or i32 %cl, %cr
  %c1 = add i32 %rot, %t
  store i32 %a1, i32* %pa
  store i32 %b1, i32* %pb
  store i32 %c1, i32* %pc
  store i32 %d1, i32* %pd
  ret i32 %t
}

; The first nonzero sfc32 output (fillNormal draws u again while u = 0).
define internal i32 @sfc32_nonzero(i32* %s) #1 {
entry:
  br label %loop
loop:
  %t = call i32 @sfc32_next(i32* %s)
  %zero = icmp eq i32 %t, 0
  br i1 %zero, label %loop, label %done
done:
  ret i32 %t
}

; One constant of normal_pairs' table (stored in both lanes of a v128; here in all four).
define internal <4 x double> @tab(<2 x double>* %k, i32 %i) #1 {
  %p = getelementptr <2 x double>, <2 x double>* %k, i32 %i
  %v = load volatile <2 x double>, <2 x double>* %p, align 16
  %v4 = shufflevector <2 x double> %v, <2 x double> %v, <4 x i32> <i32 0, i32 1, i32 2, i32 3>
  ret <4 x double> %v4
}

; The same constant as int64 lanes.
define internal <4 x i64> @tabi(<2 x double>* %k, i32 %i) #1 {
  %v = call <4 x double> @tab(<2 x double>* %k, i32 %i)
  %b = bitcast <4 x double> %v to <4 x i64>
  ret <4 x i64> %b
}

; True where a float64 (magnitude bits a) might round to another fp32 than a float64 up to
; `margin` ulps away: its low 29 bits within `margin` of the fp32 halfway point 2^28, which is
; ((a + margin - 2^28) mod 2^29) <= 2 margin (%nearOff = margin - 2^28, %twoM = 2 margin), or its
; magnitude outside [2^-126, 2^127) (bits %aLo, %aHi): fp32 subnormals, zero, overflow.
define internal <4 x i1> @f32_unsure(<4 x i64> %a, <4 x i64> %m29, <4 x i64> %nearOff, <4 x i64> %twoM, <4 x i64> %aLo, <4 x i64> %aHi) #1 {
  %t = add <4 x i64> %a, %nearOff
  %low = and <4 x i64> %t, %m29
  %near = icmp sle <4 x i64> %low, %twoM
  %under = icmp slt <4 x i64> %a, %aLo
  %over = icmp sge <4 x i64> %a, %aHi
  %out = or <4 x i1> %under, %over
  %r = or <4 x i1> %near, %out
  ret <4 x i1> %r
}

; The fp32 bits nearest each float64 (bits b, magnitude bits a) in the even lanes (the odd ones
; hold junk), for values @f32_unsure passes (fp32-normal, not at a halfway point): the
; magnitude's bits plus 2^28, shifted down 29, rebased from exponent bias 1023 to 127 (a carry
; out of the mantissa moves the exponent, as rounding up should), and the sign.
define internal <8 x i32> @f32_bits(<4 x i64> %b, <4 x i64> %a, <4 x i64> %half29, <4 x i64> %rebias) #1 {
  %ar = add <4 x i64> %a, %half29
  %sh = lshr <4 x i64> %ar, <i64 29, i64 29, i64 29, i64 29>
  %mag = sub <4 x i64> %sh, %rebias
  %s0 = lshr <4 x i64> %b, <i64 32, i64 32, i64 32, i64 32>
  %sm = and <4 x i64> %s0, <i64 2147483648, i64 2147483648, i64 2147483648, i64 2147483648>
  %bits = or <4 x i64> %mag, %sm
  %v = bitcast <4 x i64> %bits to <8 x i32>
  ret <8 x i32> %v
}

; out[2j], out[2j + 1] = fp32 of std * r cos(angle), std * r sin(angle) for the pairs j < npairs
; (npairs a multiple of 4, four per iteration) of (u, v) = (tu / 2^32, tv / 2^32) drawn as
; fillNormal draws them, with r = sqrt(-2 log u), angle = 2 pi v. log, sin and cos are fdlibm's
; algorithms (e_log.c, __ieee754_rem_pio2's medium case, __kernel_sin/__kernel_cos; Sun's notice:
; "Permission to use, copy, modify, and distribute this software is freely granted, provided
; that this notice is preserved."), within 1 ulp of Math.log/sin/cos. An output is stored as the
; fp32 nearest its float64 only when @f32_unsure clears it (then the float64 Math gives, a few
; ulps away, rounds to the same fp32); otherwise the iteration's first element index and its
; eight draws (tu, tv of each pair) go to fb[9 m .. 9 m + 8] and the caller recomputes those
; eight outputs with Math. Returns m, the number of such records. The sfc32 state s[0..3] is read
; and written back. Constants: the table %k (normal_kernel.ts NORMAL_TABLE, then
; NORMAL_TABLE_BITS).
define i32 @normal_pairs(i32* %state, float* %out, i32 %npairs, double %std, <2 x double>* %k, i32* %fb) #0 {
entry:
  %s = alloca [4 x i32], align 16
  %s0 = getelementptr [4 x i32], [4 x i32]* %s, i32 0, i32 0
  %sv = bitcast i32* %s0 to <4 x i32>*
  %st = bitcast i32* %state to <4 x i32>*
  %st0 = load <4 x i32>, <4 x i32>* %st, align 4
  store <4 x i32> %st0, <4 x i32>* %sv, align 16
  %sd0 = insertelement <4 x double> undef, double %std, i32 0
  %sd = shufflevector <4 x double> %sd0, <4 x double> undef, <4 x i32> zeroinitializer
  %cSqrt2 = call <4 x double> @tab(<2 x double>* %k, i32 0)
  %cHalf = call <4 x double> @tab(<2 x double>* %k, i32 1)
  %cOne = call <4 x double> @tab(<2 x double>* %k, i32 2)
  %cTwo = call <4 x double> @tab(<2 x double>* %k, i32 3)
  %lg1 = call <4 x double> @tab(<2 x double>* %k, i32 4)
  %lg2 = call <4 x double> @tab(<2 x double>* %k, i32 5)
  %lg3 = call <4 x double> @tab(<2 x double>* %k, i32 6)
  %lg4 = call <4 x double> @tab(<2 x double>* %k, i32 7)
  %lg5 = call <4 x double> @tab(<2 x double>* %k, i32 8)
  %lg6 = call <4 x double> @tab(<2 x double>* %k, i32 9)
  %lg7 = call <4 x double> @tab(<2 x double>* %k, i32 10)
  %ln2Hi = call <4 x double> @tab(<2 x double>* %k, i32 11)
  %ln2Lo = call <4 x double> @tab(<2 x double>* %k, i32 12)
  %cExpOff = call <4 x double> @tab(<2 x double>* %k, i32 13)
  %cMinus2 = call <4 x double> @tab(<2 x double>* %k, i32 14)
  %cTwoM32 = call <4 x double> @tab(<2 x double>* %k, i32 15)
  %cTwoPi = call <4 x double> @tab(<2 x double>* %k, i32 16)
  %cInvPio2 = call <4 x double> @tab(<2 x double>* %k, i32 17)
  %cMagic = call <4 x double> @tab(<2 x double>* %k, i32 18)
  %pio2a = call <4 x double> @tab(<2 x double>* %k, i32 19)
  %pio2b = call <4 x double> @tab(<2 x double>* %k, i32 20)
  %pio2bt = call <4 x double> @tab(<2 x double>* %k, i32 21)
  %s1 = call <4 x double> @tab(<2 x double>* %k, i32 22)
  %s2 = call <4 x double> @tab(<2 x double>* %k, i32 23)
  %s3 = call <4 x double> @tab(<2 x double>* %k, i32 24)
  %s4 = call <4 x double> @tab(<2 x double>* %k, i32 25)
  %s5 = call <4 x double> @tab(<2 x double>* %k, i32 26)
  %s6 = call <4 x double> @tab(<2 x double>* %k, i32 27)
  %c1 = call <4 x double> @tab(<2 x double>* %k, i32 28)
  %c2 = call <4 x double> @tab(<2 x double>* %k, i32 29)
  %c3 = call <4 x double> @tab(<2 x double>* %k, i32 30)
  %c4 = call <4 x double> @tab(<2 x double>* %k, i32 31)
  %c5 = call <4 x double> @tab(<2 x double>* %k, i32 32)
  %c6 = call <4 x double> @tab(<2 x double>* %k, i32 33)
  %mant = call <4 x i64> @tabi(<2 x double>* %k, i32 34)
  %expBits = call <4 x i64> @tabi(<2 x double>* %k, i32 35)
  %one64 = call <4 x i64> @tabi(<2 x double>* %k, i32 36)
  %m29 = call <4 x i64> @tabi(<2 x double>* %k, i32 37)
  %half29 = call <4 x i64> @tabi(<2 x double>* %k, i32 38)
  %nearOff = call <4 x i64> @tabi(<2 x double>* %k, i32 39)
  %twoM = call <4 x i64> @tabi(<2 x double>* %k, i32 40)
  %aLo = call <4 x i64> @tabi(<2 x double>* %k, i32 41)
  %aHi = call <4 x i64> @tabi(<2 x double>* %k, i32 42)
  %absMask = call <4 x i64> @tabi(<2 x double>* %k, i32 43)
  %rebias = call <4 x i64> @tabi(<2 x double>* %k, i32 44)
  %oneBits = bitcast <4 x double> %cOne to <4 x i64>
  %c = icmp sgt i32 %npairs, 0
  br i1 %c, label %loop, label %done
loop:
  %j = phi i32 [0, %entry], [%j1, %next]
  %m = phi i32 [0, %entry], [%m1, %next]
  %tuA = call i32 @sfc32_nonzero(i32* %s0)
  %tvA = call i32 @sfc32_next(i32* %s0)
  %tuB = call i32 @sfc32_nonzero(i32* %s0)
  %tvB = call i32 @sfc32_next(i32* %s0)
  %tuC = call i32 @sfc32_nonzero(i32* %s0)
  %tvC = call i32 @sfc32_next(i32* %s0)
  %tuD = call i32 @sfc32_nonzero(i32* %s0)
  %tvD = call i32 @sfc32_next(i32* %s0)
  %tu0 = insertelement <4 x i32> undef, i32 %tuA, i32 0
  %tu1 = insertelement <4 x i32> %tu0, i32 %tuB, i32 1
  %tu2 = insertelement <4 x i32> %tu1, i32 %tuC, i32 2
  %tu3 = insertelement <4 x i32> %tu2, i32 %tuD, i32 3
  %tu = freeze <4 x i32> %tu3 ; keeps opt from turning the conversion into scalar ones
  %tv0 = insertelement <4 x i32> undef, i32 %tvA, i32 0
  %tv1 = insertelement <4 x i32> %tv0, i32 %tvB, i32 1
  %tv2 = insertelement <4 x i32> %tv1, i32 %tvC, i32 2
  %tv3 = insertelement <4 x i32> %tv2, i32 %tvD, i32 3
  %tv = freeze <4 x i32> %tv3
  ; log u: tu = 2^(E - 1023) m with m in [1, 2); m > sqrt 2 halves m (E + 1); u = 2^e m,
  ; e = E - 1055, made exact as a double by the 2^52 trick
  %ud = uitofp <4 x i32> %tu to <4 x double>
  %ub = bitcast <4 x double> %ud to <4 x i64>
  %E0 = lshr <4 x i64> %ub, <i64 52, i64 52, i64 52, i64 52>
  %mb0 = and <4 x i64> %ub, %mant
  %mb = or <4 x i64> %mb0, %oneBits
  %m0 = bitcast <4 x i64> %mb to <4 x double>
  %big = fcmp ogt <4 x double> %m0, %cSqrt2
  %mh = fmul <4 x double> %m0, %cHalf
  %mm = select <4 x i1> %big, <4 x double> %mh, <4 x double> %m0
  %bigI = zext <4 x i1> %big to <4 x i64>
  %E = add <4 x i64> %E0, %bigI
  %eb = or <4 x i64> %E, %expBits
  %ebd = bitcast <4 x i64> %eb to <4 x double>
  %e = fsub <4 x double> %ebd, %cExpOff
  %f = fsub <4 x double> %mm, %cOne
  %f2 = fadd <4 x double> %cTwo, %f
  %sq = fdiv <4 x double> %f, %f2
  %z = fmul <4 x double> %sq, %sq
  %w = fmul <4 x double> %z, %z
  ; R = z (lg1 + w (lg3 + w (lg5 + w lg7))) + w (lg2 + w (lg4 + w lg6))
  %o7 = fmul <4 x double> %w, %lg7
  %o5 = fadd <4 x double> %lg5, %o7
  %o5w = fmul <4 x double> %w, %o5
  %o3 = fadd <4 x double> %lg3, %o5w
  %o3w = fmul <4 x double> %w, %o3
  %o1 = fadd <4 x double> %lg1, %o3w
  %t2 = fmul <4 x double> %z, %o1
  %v6 = fmul <4 x double> %w, %lg6
  %v4 = fadd <4 x double> %lg4, %v6
  %v4w = fmul <4 x double> %w, %v4
  %v2 = fadd <4 x double> %lg2, %v4w
  %t1 = fmul <4 x double> %w, %v2
  %R = fadd <4 x double> %t2, %t1
  ; log = e ln2Hi - ((hfsq - (s (hfsq + R) + e ln2Lo)) - f)
  %hf0 = fmul <4 x double> %cHalf, %f
  %hfsq = fmul <4 x double> %hf0, %f
  %hR = fadd <4 x double> %hfsq, %R
  %shR = fmul <4 x double> %sq, %hR
  %eLo = fmul <4 x double> %e, %ln2Lo
  %in1 = fadd <4 x double> %shR, %eLo
  %in2 = fsub <4 x double> %hfsq, %in1
  %in3 = fsub <4 x double> %in2, %f
  %eHi = fmul <4 x double> %e, %ln2Hi
  %lg = fsub <4 x double> %eHi, %in3
  %lgm = fmul <4 x double> %cMinus2, %lg
  %r = call <4 x double> @llvm.sqrt.v4f64(<4 x double> %lgm)
  ; angle = 2 pi v; n = nearest integer of angle 2/pi; x + y = angle - n pi/2 (pi/2 in three parts)
  %vd0 = uitofp <4 x i32> %tv to <4 x double>
  %vd = fmul <4 x double> %vd0, %cTwoM32
  %ang = fmul <4 x double> %cTwoPi, %vd
  %nq0 = fmul <4 x double> %ang, %cInvPio2
  %nq = fadd <4 x double> %nq0, %cMagic
  %fn = fsub <4 x double> %nq, %cMagic
  %fa = fmul <4 x double> %fn, %pio2a
  %rt = fsub <4 x double> %ang, %fa
  %wa = fmul <4 x double> %fn, %pio2b
  %rr = fsub <4 x double> %rt, %wa
  %wb0 = fsub <4 x double> %rt, %rr
  %wb1 = fsub <4 x double> %wb0, %wa
  %wb2 = fmul <4 x double> %fn, %pio2bt
  %wb = fsub <4 x double> %wb2, %wb1
  %x = fsub <4 x double> %rr, %wb
  %y0 = fsub <4 x double> %rr, %x
  %y = fsub <4 x double> %y0, %wb
  %zz = fmul <4 x double> %x, %x
  %ww = fmul <4 x double> %zz, %zz
  ; sin(x + y) = x - ((z (y/2 - v rs) - y) - v s1), rs = s2 + z (s3 + z s4) + z w (s5 + z s6)
  %q4 = fmul <4 x double> %zz, %s4
  %q3 = fadd <4 x double> %s3, %q4
  %q3z = fmul <4 x double> %zz, %q3
  %q2 = fadd <4 x double> %s2, %q3z
  %q6 = fmul <4 x double> %zz, %s6
  %q5 = fadd <4 x double> %s5, %q6
  %zw = fmul <4 x double> %zz, %ww
  %q5w = fmul <4 x double> %zw, %q5
  %rs = fadd <4 x double> %q2, %q5w
  %vv = fmul <4 x double> %zz, %x
  %hy = fmul <4 x double> %cHalf, %y
  %vrs = fmul <4 x double> %vv, %rs
  %sn0 = fsub <4 x double> %hy, %vrs
  %sn1 = fmul <4 x double> %zz, %sn0
  %sn2 = fsub <4 x double> %sn1, %y
  %vs1 = fmul <4 x double> %vv, %s1
  %sn3 = fsub <4 x double> %sn2, %vs1
  %sn = fsub <4 x double> %x, %sn3
  ; cos(x + y) = wc + (((1 - wc) - hz) + (z rc - x y)), wc = 1 - z/2,
  ; rc = z (c1 + z (c2 + z c3)) + w w (c4 + z (c5 + z c6))
  %k3 = fmul <4 x double> %zz, %c3
  %k2 = fadd <4 x double> %c2, %k3
  %k2z = fmul <4 x double> %zz, %k2
  %k1 = fadd <4 x double> %c1, %k2z
  %ka = fmul <4 x double> %zz, %k1
  %k6 = fmul <4 x double> %zz, %c6
  %k5 = fadd <4 x double> %c5, %k6
  %k5z = fmul <4 x double> %zz, %k5
  %k4 = fadd <4 x double> %c4, %k5z
  %w2 = fmul <4 x double> %ww, %ww
  %kb = fmul <4 x double> %w2, %k4
  %rc = fadd <4 x double> %ka, %kb
  %hz = fmul <4 x double> %cHalf, %zz
  %wc = fsub <4 x double> %cOne, %hz
  %cw0 = fsub <4 x double> %cOne, %wc
  %cw1 = fsub <4 x double> %cw0, %hz
  %zrc = fmul <4 x double> %zz, %rc
  %xy = fmul <4 x double> %x, %y
  %cw2 = fsub <4 x double> %zrc, %xy
  %cw3 = fadd <4 x double> %cw1, %cw2
  %cs = fadd <4 x double> %wc, %cw3
  ; quadrant q = n mod 4 (the low bits of nq): odd q swaps sin and cos, q in {2, 3} negates
  ; sin, q in {1, 2} negates cos
  %nqb = bitcast <4 x double> %nq to <4 x i64>
  %q1 = and <4 x i64> %nqb, %one64
  %odd = icmp ne <4 x i64> %q1, zeroinitializer
  %sinA = select <4 x i1> %odd, <4 x double> %cs, <4 x double> %sn
  %cosA = select <4 x i1> %odd, <4 x double> %sn, <4 x double> %cs
  %qh = lshr <4 x i64> %nqb, <i64 1, i64 1, i64 1, i64 1>
  %qh1 = and <4 x i64> %qh, %one64
  %sinNeg = shl <4 x i64> %qh1, <i64 63, i64 63, i64 63, i64 63>
  %qx = xor <4 x i64> %qh1, %q1
  %cosNeg = shl <4 x i64> %qx, <i64 63, i64 63, i64 63, i64 63>
  %sinAb = bitcast <4 x double> %sinA to <4 x i64>
  %cosAb = bitcast <4 x double> %cosA to <4 x i64>
  %sinB = xor <4 x i64> %sinAb, %sinNeg
  %cosB = xor <4 x i64> %cosAb, %cosNeg
  %sinv = bitcast <4 x i64> %sinB to <4 x double>
  %cosv = bitcast <4 x i64> %cosB to <4 x double>
  ; outputs std (r cos), std (r sin)
  %rcos = fmul <4 x double> %r, %cosv
  %rsin = fmul <4 x double> %r, %sinv
  %oc = fmul <4 x double> %sd, %rcos
  %os = fmul <4 x double> %sd, %rsin
  %ocb = bitcast <4 x double> %oc to <4 x i64>
  %osb = bitcast <4 x double> %os to <4 x i64>
  %oca = and <4 x i64> %ocb, %absMask
  %osa = and <4 x i64> %osb, %absMask
  %badc = call <4 x i1> @f32_unsure(<4 x i64> %oca, <4 x i64> %m29, <4 x i64> %nearOff, <4 x i64> %twoM, <4 x i64> %aLo, <4 x i64> %aHi)
  %bads = call <4 x i1> @f32_unsure(<4 x i64> %osa, <4 x i64> %m29, <4 x i64> %nearOff, <4 x i64> %twoM, <4 x i64> %aLo, <4 x i64> %aHi)
  %bad2 = or <4 x i1> %badc, %bads
  %bad64 = sext <4 x i1> %bad2 to <4 x i64>
  %badLo = shufflevector <4 x i64> %bad64, <4 x i64> undef, <2 x i32> <i32 0, i32 1>
  %badHi = shufflevector <4 x i64> %bad64, <4 x i64> undef, <2 x i32> <i32 2, i32 3>
  %badOr = or <2 x i64> %badLo, %badHi
  %bad8 = bitcast <2 x i64> %badOr to <16 x i8>
  %anyBad = call i32 @llvm.wasm.anytrue.v16i8(<16 x i8> %bad8)
  %ok = icmp eq i32 %anyBad, 0
  ; out[2j ..] = A cos, A sin, B cos, B sin, C ..., D ..., each the fp32 nearest its float64
  %fc = call <8 x i32> @f32_bits(<4 x i64> %ocb, <4 x i64> %oca, <4 x i64> %half29, <4 x i64> %rebias)
  %fs = call <8 x i32> @f32_bits(<4 x i64> %osb, <4 x i64> %osa, <4 x i64> %half29, <4 x i64> %rebias)
  %eight = shufflevector <8 x i32> %fc, <8 x i32> %fs, <8 x i32> <i32 0, i32 8, i32 2, i32 10, i32 4, i32 12, i32 6, i32 14>
  %el = shl i32 %j, 1
  %po = getelementptr float, float* %out, i32 %el
  %pov = bitcast float* %po to <8 x i32>*
  store <8 x i32> %eight, <8 x i32>* %pov, align 4
  br i1 %ok, label %next, label %record
record:
  %r9 = mul i32 %m, 9
  %pf = getelementptr i32, i32* %fb, i32 %r9
  store i32 %el, i32* %pf
  %pf1 = getelementptr i32, i32* %pf, i32 1
  %pfu = bitcast i32* %pf1 to <4 x i32>*
  %uv0 = shufflevector <4 x i32> %tu, <4 x i32> %tv, <4 x i32> <i32 0, i32 4, i32 1, i32 5>
  %uv1 = shufflevector <4 x i32> %tu, <4 x i32> %tv, <4 x i32> <i32 2, i32 6, i32 3, i32 7>
  store <4 x i32> %uv0, <4 x i32>* %pfu, align 4
  %pf5 = getelementptr i32, i32* %pf, i32 5
  %pfv = bitcast i32* %pf5 to <4 x i32>*
  store <4 x i32> %uv1, <4 x i32>* %pfv, align 4
  %mr = add i32 %m, 1
  br label %next
next:
  %m1 = phi i32 [%m, %loop], [%mr, %record]
  %j1 = add i32 %j, 4
  %more = icmp slt i32 %j1, %npairs
  br i1 %more, label %loop, label %done
done:
  %mres = phi i32 [0, %entry], [%m1, %next]
  %stE = load <4 x i32>, <4 x i32>* %sv, align 16
  store <4 x i32> %stE, <4 x i32>* %st, align 4
  ret i32 %mres
}
declare <4 x double> @llvm.sqrt.v4f64(<4 x double>)
declare i32 @llvm.wasm.anytrue.v16i8(<16 x i8>)

; Advance the sfc32 state s[0..3] past the draws of npairs Box-Muller pairs (u drawn again while
; zero, then v), as normal_pairs would: the state a second thread starts its share from.
define void @sfc32_skip(i32* %state, i32 %npairs) #0 {
entry:
  %c = icmp sgt i32 %npairs, 0
  br i1 %c, label %loop, label %done
loop:
  %j = phi i32 [0, %entry], [%j1, %loop]
  %u = call i32 @sfc32_nonzero(i32* %state)
  %v = call i32 @sfc32_next(i32* %state)
  %j1 = add i32 %j, 1
  %more = icmp slt i32 %j1, %npairs
  br i1 %more, label %loop, label %done
done:
  ret void
}
