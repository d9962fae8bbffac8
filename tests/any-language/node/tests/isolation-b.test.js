require('../lib/isolation')('b', 3)
